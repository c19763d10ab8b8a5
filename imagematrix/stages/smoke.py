"""Smoke stage (CPU): tests/smoke against an image, output into the row's smoke.log. The GPU suite is smoke_gpu."""

from __future__ import annotations

import sys
from pathlib import Path

from imagematrix.model.matrix import Matrix, Row
from imagematrix.model.paths import ROOT
from imagematrix.tools import process


def run_smoke(matrix: Matrix, row: Row, image: str, log_path: Path, extra: list[str] | None = None) -> bool:
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "tests" / "smoke"), "-p", "no:cacheprovider", "-q", "-rs",
           "--image", image, "--row", row.id, "--matrix", str(matrix.path), *(extra or [])]
    return process.run_logged(cmd, log_path, cwd=ROOT) == 0

