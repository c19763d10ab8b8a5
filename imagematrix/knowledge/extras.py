"""How the CPU smoke tests check the packages a row pins in `extras:` (data: knowledge/extras.yaml).

- entries(path): distribution (normalised) -> Extra (module, no_gpu_error, source); a malformed file is bad input.
- smoke_plan(row): one Check per extra of the row, in name order: the module to import and how (`import`, or
  `find_spec` for a package that refuses to import without a GPU, with the error it gives and why).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from packaging.utils import canonicalize_name
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

from imagematrix.model import paths, yamlio
from imagematrix.model.errors import InputError
from imagematrix.model.matrix import Row

FILE_NAME = "extras.yaml"
Module = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")]
# compared with a container's stderr, printed in a test's message: one line of printable text
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=500,
                                        pattern=r"^[^\x00-\x1f\x7f]+$")]


class Extra(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    module: Module
    no_gpu_error: Text | None = None
    source: Text


@dataclass(frozen=True)
class Check:
    dist: str  # as the row spells it
    version: str
    module: str
    how: Literal["import", "find_spec"]
    no_gpu_error: str | None = None  # with find_spec: the import may fail with this text only
    why: str = ""


def default_path() -> Path:
    return paths.KNOWLEDGE / FILE_NAME


def load(path: Path | None = None) -> dict[str, Extra]:
    path = path or default_path()
    doc = yamlio.load_mapping(path, keys="an `extras:` mapping of distribution names")
    items = doc.get("extras")
    if not isinstance(items, dict):
        raise InputError("expected a mapping with an `extras:` mapping of distribution names", where=str(path),
                         fix="see the comment at the top of the file for the form of an entry")
    out = {}
    for name, item in items.items():
        where = f"{path}:{yamlio.line_of(items, name) or '?'}"
        key = canonicalize_name(str(name))
        if key in out:
            raise InputError(f"extra {name!r} appears twice", where=where, fix="give each distribution one entry")
        try:
            out[key] = Extra.model_validate(dict(item) if isinstance(item, dict) else item)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'entry'}: {e['msg']}" for e in exc.errors())
            raise InputError(f"invalid entry for {name!r}: {problems}", where=where,
                             fix="see the comment at the top of the file for the form of an entry") from None
    return out


@functools.cache
def entries() -> dict[str, Extra]:
    return load()


def default_module(dist: str) -> str:
    return re.sub(r"[-.]+", "_", canonicalize_name(dist))


def smoke_plan(row: Row, known: dict[str, Extra] | None = None) -> list[Check]:
    known = entries() if known is None else known
    out = []
    for dist, version in sorted(row.extras.items()):
        entry = known.get(canonicalize_name(dist))
        if entry is None:
            out.append(Check(dist, version, default_module(dist), "import"))
        elif entry.no_gpu_error:
            out.append(Check(dist, version, entry.module, "find_spec", entry.no_gpu_error,
                             f"{dist} refuses to import without a GPU ({entry.source}); the GPU suite imports it"))
        else:
            out.append(Check(dist, version, entry.module, "import"))
    return out
