"""Where the project's data lives (all outside the code)."""

from __future__ import annotations

import errno
import glob
import hashlib
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from imagematrix.model.errors import RuntimeFailure


def _root() -> Path:
    """The project's data (matrix.yaml, knowledge/, dockerfiles/, locks/): the checkout that holds this package (a
    clone, an editable install); an installed package has none beside it and reads the current directory's (run
    `python -m imagematrix` in a checkout)."""
    checkout = Path(__file__).resolve().parents[2]
    return checkout if (checkout / "knowledge").is_dir() else Path.cwd().resolve()


ROOT = _root()
MATRIX = ROOT / "matrix.yaml"
DOCKERFILES = ROOT / "dockerfiles"
TEMPLATES = DOCKERFILES / "templates"
PATCHES = DOCKERFILES / "patches"
GENERATED = DOCKERFILES / "generated"
KNOWLEDGE = ROOT / "knowledge"  # facts, not code: rules, GPUs, environment defaults, bootstrappable bases
BASES = KNOWLEDGE / "bases.yaml"
ENV_DEFAULTS = KNOWLEDGE / "env-defaults.yaml"
WHEEL_TAGS = KNOWLEDGE / "wheel-tags.yaml"
RULES = KNOWLEDGE / "rules.yaml"
GPUS = KNOWLEDGE / "gpus.yaml"
FLASH_ATTN = KNOWLEDGE / "flash-attn.yaml"
LOCKS = ROOT / "locks"
# The package's own files, found beside this module (a checkout or an installed wheel), never through ROOT:
PACKAGE = Path(__file__).resolve().parents[1]
IN_IMAGE = PACKAGE / "in_image"  # standard-library code copied into images
SUITES = PACKAGE / "suites"  # the test suites run against an image: cpu/ (stages/smoke), gpu/ (stages/smoke_gpu)


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write a file whole or not at all (unique temp file beside it, then rename); mode 0644.

    Safe when several threads or processes write the same path: each uses its own temp file. The temp file's name
    carries the writer's pid: one left by a writer that was killed (SIGKILL, between write and rename) is removed by
    the next write of the same path on this host, while a live writer's is left alone.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}."
    for leftover in path.parent.glob(glob.escape(prefix) + "*"):
        match = re.fullmatch(r"(\d+)\.[^.]+", leftover.name[len(prefix):])  # <pid>.<mkstemp's random part>
        if match and not _running(int(match.group(1))):
            leftover.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{prefix}{os.getpid()}.", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def file_sha256(path: Path) -> str:
    """The sha256 (hex) of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def cache_dir() -> Path:
    """The cache root ($IMAGEMATRIX_CACHE, else ~/.cache/imagematrix), created: one that cannot be is a
    RuntimeFailure naming it here, not an OSError deep inside whichever stage writes there first."""
    variable = os.environ.get("IMAGEMATRIX_CACHE")
    root = Path(variable or Path.home() / ".cache" / "imagematrix")
    try:
        if root.exists() and not root.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "it is not a directory")
        root.mkdir(parents=True, exist_ok=True)
        if not os.access(root, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "it is not writable")
    except OSError as exc:
        name = f"IMAGEMATRIX_CACHE={root}" if variable else f"the cache directory {root} (set IMAGEMATRIX_CACHE)"
        raise RuntimeFailure(f"{name} is not a usable directory: {exc.strerror or exc}; "
                             "fix: point it at a writable folder") from None
    return root


def scratch_dir(max_age_s: float = 86400) -> Path:
    """Where the tool's temporary directories go: under the cache root (not /tmp), so that one left by a killed run
    is found and swept by a later one (those older than max_age_s, a day: no run lasts that long)."""
    root = cache_dir() / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - max_age_s
    for old in root.iterdir():
        try:
            if old.stat().st_mtime >= cutoff:
                continue
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink()
        except OSError:
            pass
    return root
