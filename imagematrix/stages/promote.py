"""Promote stage (CI): retag tested candidates to their final tags in the registry, no pull, no rebuild."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console

from imagematrix.model import labels, tags
from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.model.matrix import Matrix, Row
from imagematrix.stages import render
from imagematrix.stages.publish import Outcome, remote_labels
from imagematrix.tools import registry as registry_api
from imagematrix.tools import skopeo


def rows_from_plan(matrix: Matrix, plan_json: str) -> list[Row]:
    """The rows of a `plan --github` matrix (JSON)."""
    try:
        ids = [entry["row"] for entry in json.loads(plan_json)["include"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"--plan-json is not a `plan --github` matrix ({exc})", fix="pass that command's output") from None
    return matrix.select(ids) if ids else []


def missing_results(rows: list[Row], need: list[str], results: Path | None) -> dict[str, list[str]]:
    """Per row, the jobs in `need` without a result file <job>--<row-id> in `results`."""
    if need and results is None:
        raise InputError("--need needs --results DIR", fix="pass the directory of result files")
    return {row.id: [job for job in need if not (results / f"{job}--{row.id}").is_file()] for row in rows}


COMPRESSIONS = ("gzip", "zstd", "both")
ZSTD_SUFFIX = "-zstd"  # with --compression both: the zstd copy of each final tag


def publish_tags(repo: str, candidate: str, final: list[str], compression: str) -> list[str]:
    """Point the final tags at the candidate: gzip retags it (BuildKit pushed gzip layers; nothing moves); zstd
    copies it once with every layer recompressed as zstd (skopeo) and points the other tags at that copy; both
    does the first and, beside each final tag, a zstd copy tagged <tag>-zstd. Returns the tags written."""
    written: list[str] = []
    if compression in ("gzip", "both"):
        for tag in final:
            registry_api.retag(repo, candidate, tag)
        written += final
    if compression in ("zstd", "both"):
        names = final if compression == "zstd" else [f"{tag}{ZSTD_SUFFIX}" for tag in final]
        skopeo.copy(f"{repo}:{candidate}", f"{repo}:{names[0]}", compress="zstd")
        for tag in names[1:]:
            registry_api.retag(repo, names[0], tag)
        written += names
    return written


def promote(matrix: Matrix, rows: list[Row], registry: str, console: Console,
            missing: dict[str, list[str]] | None = None, compression: str = "gzip") -> list[Outcome]:
    """Retag each row's tested candidate to its final tags, in the registry (no pull, no rebuild); with
    compression zstd or both, the final tags (or <tag>-zstd beside them) get a zstd-recompressed copy.

    A row is held back when `missing` names test results it lacks, when its candidate is absent, or when the
    candidate was built from another input than the committed build context.
    """
    final = tags.published_tags([(r.id, r.vllm) for r in matrix.rows])
    repo = tags.repository(registry)
    outcomes = []
    for item in render.render(matrix, rows):
        row, digest, started = item.row, item.context_digest(), time.monotonic()
        candidate = tags.candidate_tag(row.id, digest)

        def outcome(state: str, detail: str, row=row, started=started) -> Outcome:
            return Outcome(row.id, state, "promote", time.monotonic() - started, detail)

        lacking = (missing or {}).get(row.id)
        if lacking:
            outcomes.append(outcome("failed", f"held back: no passing result from {', '.join(lacking)}"))
            continue
        try:
            remote = remote_labels(registry, candidate)
            if remote is None:
                outcomes.append(outcome("failed", f"no candidate {repo}:{candidate} in the registry: build and push it "
                                                  f"with `build.py build --row {row.id} --push candidate`"))
                continue
            if remote.get(labels.INPUT_DIGEST) != digest:
                outcomes.append(outcome("failed", f"{repo}:{candidate} was built from input "
                                                  f"{remote.get(labels.INPUT_DIGEST)}, not {digest}: rebuild it"))
                continue
            written = publish_tags(repo, candidate, final[row.id], compression)
            outcomes.append(outcome("pushed", f"{repo}:{candidate} -> {', '.join(written)}"
                                              + ("" if compression == "gzip" else f" ({compression})")))
        except RuntimeFailure as exc:
            outcomes.append(outcome("failed", str(exc)))
    for o in outcomes:
        console.print(f"{o.row}: {'promoted' if o.status == 'pushed' else 'NOT promoted'}: {o.detail}")
    return outcomes

