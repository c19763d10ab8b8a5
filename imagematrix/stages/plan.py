"""Plan stage: which rows need a build, compared by input digest with what the registry already has.

The same plan feeds the human listing (`plan`), the bake file (`plan --bake`) and the GitHub Actions matrix
(`plan --github`), so CI never keeps a list of rows of its own.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass

from imagematrix.model import labels, tags
from imagematrix.model.errors import InputError
from imagematrix.model.matrix import Matrix, Row
from imagematrix.stages import flash_attn, publish, render


@dataclass(frozen=True)
class Planned:
    item: render.Rendered
    candidate: str  # full reference of the candidate tag
    published: str | None  # input digest the row's final tag carries in the registry (None: absent, or not asked)
    flash_attn: tuple[str, str] | None = None  # (source, sentence) of the row's flash-attn wheel (stages/flash_attn)

    @property
    def row(self) -> Row:
        return self.item.row

    @property
    def digest(self) -> str:
        return self.item.context_digest()

    @property
    def changed(self) -> bool:
        return self.published != self.digest


def select(matrix: Matrix, ids: list[str] | None, patterns: list[str] | None) -> list[Row]:
    """Rows by exact id (--row) and/or shell-style pattern (--match); every row when neither is given."""
    rows = matrix.select(ids) if ids else ([] if patterns else list(matrix.rows))
    for pattern in patterns or []:
        found = [r for r in matrix.rows if fnmatch.fnmatchcase(r.id, pattern) and r not in rows]
        if not found and not any(fnmatch.fnmatchcase(r.id, pattern) for r in rows):
            raise InputError(f"--match {pattern!r} matches no row", where=str(matrix.path),
                             fix=f"row ids are: {', '.join(r.id for r in matrix.rows)}")
        rows += found
    return [r for r in matrix.rows if r in rows]  # matrix order


def plan(matrix: Matrix, rows: list[Row], registry: str, *, ask_registry: bool = True) -> list[Planned]:
    repo = tags.repository(registry)
    out = []
    for item in render.render(matrix, rows):
        remote = publish.remote_labels(registry, item.row.id) if ask_registry else None
        fa = flash_attn.describe(item.row, registry, ask_registry) if item.row.flash_attn else None
        out.append(Planned(item=item, candidate=f"{repo}:{tags.candidate_tag(item.row.id, item.context_digest())}",
                           published=(remote or {}).get(labels.INPUT_DIGEST), flash_attn=fa))
    return out


def github_matrix(planned: list[Planned]) -> dict:
    """A `strategy.matrix` value: {"include": [{row, vllm, cuda, flash_attn, flash_attn_source, candidate}, ...]}
    (strings only; flash_attn_source: registry, prebuilt, compile or none)."""
    return {"include": [{"row": p.row.id, "vllm": p.row.vllm, "cuda": p.row.cuda, "flash_attn": p.row.flash_attn or "",
                         "flash_attn_source": p.flash_attn[0] if p.flash_attn else "",
                         "candidate": p.candidate} for p in planned]}


def github_outputs(planned: list[Planned]) -> str:
    """Lines for $GITHUB_OUTPUT: `matrix` (compact JSON) and `count` (jobs skip on 0: an empty matrix is an error)."""
    return f"matrix={json.dumps(github_matrix(planned), separators=(',', ':'))}\ncount={len(planned)}\n"
