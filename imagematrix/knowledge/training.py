"""How a row's image trains with verl: flash_attention_2 (flash-attn ships), SDPA through verl's override, or not at
all (rollout only). Data: knowledge/training.yaml."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Annotated, Literal

from packaging.specifiers import SpecifierSet
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

from imagematrix.model import paths, yamlio
from imagematrix.model.errors import InputError
from imagematrix.model.matrix import Row

TRAINING = paths.KNOWLEDGE / "training.yaml"
HYDRA_OVERRIDE = r"^\+{0,2}[A-Za-z_][A-Za-z0-9_.]*=[A-Za-z0-9_.:/-]+$"  # +a.b.c=value: nothing a Dockerfile line reads


class Band(BaseModel):
    model_config = ConfigDict(extra="forbid")
    verl: str
    flash_attention_2: Literal["hard-coded", "default"]
    override: Annotated[str, StringConstraints(pattern=HYDRA_OVERRIDE)] | None = None  # goes into a Dockerfile label
    source: str


@functools.cache
def bands() -> tuple[Band, ...]:
    doc = yamlio.load_mapping(TRAINING, keys="an `attention:` list")
    try:
        if not isinstance(doc.get("attention"), list):
            raise ValueError("expected a mapping with an `attention:` list")
        out = tuple(Band.model_validate(item) for item in doc.get("attention") or [])
        for item in out:
            SpecifierSet(item.verl)
        return out
    except (ValidationError, ValueError) as exc:  # InvalidSpecifier is a ValueError
        raise InputError(f"{TRAINING.name} is invalid: {exc}", where=str(TRAINING)) from None


@dataclass(frozen=True)
class Training:
    """How the row's image trains (FSDP actor) with verl."""

    attn_implementation: str | None  # "flash_attention_2", "sdpa", or None: no training in this image
    override: str | None  # the Hydra override to pass to verl's trainer, when one is needed
    needs_flash_attn: bool  # verl hard-codes flash_attention_2 (training impossible without flash-attn)
    note: str  # one line for the label, the docs, doctor and pick

    @property
    def rollout_only(self) -> bool:
        return self.attn_implementation is None


def band(verl: str) -> Band | None:
    return next((b for b in bands() if SpecifierSet(b.verl).contains(verl, prereleases=True)), None)


def attention(row: Row) -> Training:
    found = band(row.verl)
    hard = found is not None and found.flash_attention_2 == "hard-coded"
    if row.flash_attn:
        return Training("flash_attention_2", None, hard, f"trains with flash_attention_2 (flash-attn {row.flash_attn})")
    if found is None:
        return Training(None, None, False, f"no training data for verl {row.verl} in {TRAINING.name}")
    if hard:
        reason = row.rollout_only or "no flash-attn"
        return Training(None, None, True, f"rollout only: verl {row.verl} hard-codes flash_attention_2 ({reason})")
    return Training("sdpa", found.override, False, f"trains with sdpa: pass {found.override}")
