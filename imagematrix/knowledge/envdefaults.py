"""Environment defaults per vLLM version (data: knowledge/env-defaults.yaml)."""

from __future__ import annotations

from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from pydantic import BaseModel, ConfigDict, ValidationError

from imagematrix.model import paths, yamlio
from imagematrix.model.errors import InputError
from imagematrix.model.matrix import EnvName, EnvValue, Reason, Row


class EnvDefault(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: EnvName
    value: EnvValue
    vllm: str
    reason: Reason


def load(path: Path = paths.ENV_DEFAULTS) -> list[EnvDefault]:
    doc = yamlio.load(path)
    items = doc.get("env") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise InputError("expected a mapping with an `env:` list", where=str(path))
    out = []
    for index, item in enumerate(items):
        where = f"{path}:{yamlio.line_of(items, index)}"
        try:
            entry = EnvDefault.model_validate(dict(item))
            SpecifierSet(entry.vllm)
        except (ValidationError, InvalidSpecifier, TypeError, ValueError) as exc:
            raise InputError(f"invalid env default: {exc}", where=where) from None
        out.append(entry)
    return out


def for_row(row: Row, defaults: list[EnvDefault]) -> dict[str, str]:
    """The environment an image of this row gets: versioned defaults, then the row's own `env`."""
    env = {d.name: d.value for d in defaults if SpecifierSet(d.vllm).contains(row.vllm, prereleases=True)}
    env.update(row.env)
    return dict(sorted(env.items()))
