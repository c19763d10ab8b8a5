"""Plan stage: which rows need a build, compared by input digest with what the registry already has.

The same plan feeds the human listing (`plan`), the bake file (`plan --bake`) and the GitHub Actions matrix
(`plan --github`), so CI never keeps a list of rows of its own. CI's flash-attn job takes its matrix from here too:
the distinct wheel keys with neither a known prebuilt wheel nor a copy in the registry, each compiled once before
the row builds that need it.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass

from imagematrix.knowledge import flash_attn as fa_knowledge
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
    wheel_ref: str = ""  # the wheel image a build takes as it is (source registry or compile: flash-attn-wheels:<key>)

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


def plan(matrix: Matrix, rows: list[Row], registry: str, *, ask_registry: bool = True,
         ask_wheels: bool | None = None) -> list[Planned]:
    """ask_registry: read each row's final tag (its input digest); ask_wheels (default: ask_registry): look up each
    flash-attn row's wheel as flash-attn-wheels:<key>, so a key compiled earlier is not planned for a compile."""
    repo = tags.repository(registry)
    ask_wheels = ask_registry if ask_wheels is None else ask_wheels
    out = []
    for item in render.render(matrix, rows):
        remote = publish.remote_labels(registry, item.row.id) if ask_registry else None
        wheel = fa_knowledge.wheel_spec(item.row)
        fa = flash_attn.describe(wheel, registry, ask_wheels) if wheel else None
        ref = f"{flash_attn.wheel_repository(registry)}:{wheel.key}" if fa and fa[0] in ("registry", "compile") else ""
        out.append(Planned(item=item, candidate=f"{repo}:{tags.candidate_tag(item.row.id, item.context_digest())}",
                           published=(remote or {}).get(labels.INPUT_DIGEST), flash_attn=fa, wheel_ref=ref))
    return out


def github_matrix(planned: list[Planned]) -> dict:
    """A `strategy.matrix` value: {"include": [{row, vllm, cuda, flash_attn, flash_attn_source, flash_attn_key,
    flash_attn_wheel, candidate}, ...]} (strings only; flash_attn_source: registry, prebuilt, compile or none;
    flash_attn_key: the tag of the row's wheel in flash-attn-wheels, "" without flash-attn; flash_attn_wheel: that
    wheel image, which the build job takes with --flash-attn-wheel, when the registry has it or the flash-attn job
    puts it there, else "")."""
    return {"include": [{"row": p.row.id, "vllm": p.row.vllm, "cuda": p.row.cuda, "flash_attn": p.row.flash_attn or "",
                         "flash_attn_source": p.flash_attn[0] if p.flash_attn else "",
                         "flash_attn_key": fa_knowledge.wheel_spec(p.row).key if p.flash_attn else "",
                         "flash_attn_wheel": p.wheel_ref,
                         "candidate": p.candidate} for p in planned]}


# The GitHub-hosted runner each platform's images build on natively (CI's build-platforms job); amd64's is the build
# job's ubuntu-latest. A row's arm64 image is built there, never emulated (emulated, it takes hours: measurements).
RUNNERS = {"linux/arm64": "ubuntu-24.04-arm"}


def platform_matrix(matrix: Matrix, planned: list[Planned], registry: str, *, ask_registry: bool = True,
                    everything: bool = False) -> dict:
    """The `strategy.matrix` of CI's build-platforms job: {"include": [{row, platform, runner, candidate}, ...]}, one
    entry per image of a multi-platform row's other platforms (linux/arm64) that its final tag's index lacks with
    that image's input digest (every one with everything, as --all, or without asking the registry)."""
    out = []
    for p in planned:
        others = [platform for platform in p.row.platforms if platform != p.item.platform]
        if not others:
            continue
        served = (publish.remote_platform_labels(registry, p.row.id) or {}) if ask_registry and not everything else {}
        for platform in others:
            item = render.render_one(matrix, p.row, platform)
            if not everything and (served.get(platform) or {}).get(labels.INPUT_DIGEST) == item.context_digest():
                continue
            out.append({"row": p.row.id, "platform": platform, "runner": RUNNERS[platform],
                        "candidate": f"{tags.repository(registry)}:{tags.candidate_tag(p.row.id, item.context_digest())}"})
    return {"include": out}


def flash_attn_matrix(planned: list[Planned]) -> dict:
    """The `strategy.matrix` of CI's flash-attn job: {"include": [{key, row}, ...]}, one entry per distinct wheel key
    whose source is "compile" (no known prebuilt wheel, not in the registry), row being the first planned row with that key
    (any row of the key compiles the same wheel). Empty when nothing is to be compiled."""
    keys: dict[str, str] = {}
    for p in planned:
        if p.flash_attn and p.flash_attn[0] == "compile":
            keys.setdefault(fa_knowledge.wheel_spec(p.row).key, p.row.id)
    return {"include": [{"key": key, "row": row} for key, row in keys.items()]}


def github_outputs(planned: list[Planned], platforms: dict | None = None) -> str:
    """Lines for $GITHUB_OUTPUT: `matrix` (compact JSON) and `count` (jobs skip on 0: an empty matrix is an error),
    `flash_attn` (flash_attn_matrix, compact JSON) and `flash_attn_count` (the flash-attn job skips on 0), and
    `platforms` (platform_matrix) and `platforms_count` (the build-platforms job skips on 0)."""
    compiles = flash_attn_matrix(planned)
    platforms = platforms or {"include": []}
    return (f"matrix={json.dumps(github_matrix(planned), separators=(',', ':'))}\ncount={len(planned)}\n"
            f"flash_attn={json.dumps(compiles, separators=(',', ':'))}\nflash_attn_count={len(compiles['include'])}\n"
            f"platforms={json.dumps(platforms, separators=(',', ':'))}\nplatforms_count={len(platforms['include'])}\n")
