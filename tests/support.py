"""Helpers shared by unit and integration tests (no fixtures: those live in conftest.py)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

from imagematrix.in_image import patch_apply


def actions_expand(matrix: dict) -> list[dict]:
    """The jobs GitHub Actions makes of a strategy.matrix: dimensions crossed, then include/exclude applied."""
    dims = {k: v for k, v in matrix.items() if k not in ("include", "exclude")}
    if any(not isinstance(v, list) or not v for v in dims.values()):
        raise ValueError("every matrix dimension must be a non-empty list")
    jobs = [dict(zip(dims, values, strict=True)) for values in itertools.product(*dims.values())] if dims else []
    jobs = [j for j in jobs if not any(all(j.get(k) == v for k, v in ex.items()) for ex in matrix.get("exclude", []))]
    for extra in matrix.get("include", []):
        matched = [j for j in jobs if all(j.get(k) == v for k, v in extra.items() if k in dims)]
        if dims and matched:
            for j in matched:
                j.update({k: v for k, v in extra.items() if k not in dims})
        else:
            jobs.append(dict(extra))
    if not jobs:
        raise ValueError("Matrix vector does not contain any values")  # what Actions reports for an empty matrix
    return jobs


def fake_site(tmp_path: Path, version: str, files: dict[str, str]) -> Path:
    site = tmp_path / "site"
    dist = site / f"vllm-{version}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n")
    for name, text in files.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(text)
    return site


def run_applier(site: Path, patch_json: Path, record: Path, *extra: str):
    """Run patch_apply.py as a script, as the Dockerfile does, with `site` as the installed packages."""
    return subprocess.run([sys.executable, patch_apply.__file__, str(patch_json), "--record", str(record), *extra],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(site)})
