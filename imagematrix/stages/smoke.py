"""Smoke stage (CPU): the suite imagematrix/suites/cpu against an image, output into the row's smoke.log. The GPU suite
(imagematrix/suites/gpu) is smoke_gpu.

The build runs them once per built image (run_once): a pass is kept under the cache, keyed by the image's id and the
suite's files, so building the same image again (`--rebuild` with nothing changed, the same row pushed to a second
namespace) hands back that pass and its log instead of running the suite on identical bytes a second time.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

from imagematrix.model import paths
from imagematrix.model.fields import DEFAULT_PLATFORM
from imagematrix.model.matrix import Matrix, Row
from imagematrix.model.paths import ROOT
from imagematrix.tools import docker, host, process

SUITE = paths.SUITES / "cpu"  # package data: an installed imagematrix runs it too


def run_smoke(matrix: Matrix, row: Row, image: str, log_path: Path, extra: list[str] | None = None,
              platform: str = DEFAULT_PLATFORM) -> bool:
    """The CPU suite against image (built for platform: another one than this host's runs emulated, and the log's
    first line says so)."""
    cmd = [sys.executable, "-m", "pytest", str(SUITE), "-p", "no:cacheprovider", "-q", "-rs",
           "--image", image, "--row", row.id, "--matrix", str(matrix.path), "--platform", platform, *(extra or [])]
    return process.run_logged(cmd, log_path, cwd=ROOT, header=platform_note(platform)) == 0


def platform_note(platform: str) -> str:
    """The smoke log's first line: the platform, and whether it ran natively or under emulation."""
    native = host.native_platform()
    how = "native" if platform == native else f"under emulation (qemu-user, binfmt_misc) on this {native} host"
    return f"# smoke tests of the {platform} image, {how}\n"


def run_once(matrix: Matrix, row: Row, image: str, log_path: Path,
             platform: str = DEFAULT_PLATFORM) -> tuple[bool, str | None]:
    """(passed, image id when the pass was kept from an earlier run on the same image, else None)."""
    image_id = docker.run("image", "inspect", "--format", "{{.Id}}", image).stdout.strip()
    kept = _kept(row, image_id) if image_id else None
    if kept is not None and kept.is_file():
        log_path.write_text(f"# the smoke tests passed earlier on this image ({image_id}, the same suite): not run "
                            "again; the log of that run follows\n" + kept.read_text(errors="replace"))
        return True, image_id
    passed = run_smoke(matrix, row, image, log_path, platform=platform)
    if passed and kept is not None:
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log_path, kept)
    return passed, None


def _kept(row: Row, image_id: str) -> Path:
    h = hashlib.sha256(f"{row.id}\0{image_id}\0".encode())
    for path in sorted((*SUITE.glob("*.py"), paths.KNOWLEDGE / "extras.yaml")):
        h.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return paths.cache_dir() / "smoke-passed" / f"{h.hexdigest()[:32]}.log"
