"""cuobjdump (NVIDIA's CUDA binary utility): the one place that runs it, to list the device code in a file.

`cuobjdump --list-elf --list-ptx FILE` names each machine-code (SASS) ELF and each PTX entry of the file's fatbins:

    ELF file    1: libcurand.so.1.sm_75.cubin
    PTX file    1: libcurand.so.1.sm_75.ptx

The architecture is the name's second-to-last dot part: `sm_90a.cubin` is arch-specific SASS, `sm_100f.cubin`
family-specific, and a PTX entry is named `sm_XY[af].ptx` too; it is reported here as `compute_XY[af]`, the name nvcc
gives virtual architectures. A file without device code is not an error (cuobjdump says so and exits 255).

Where it is found: $CUOBJDUMP, then PATH, then the CUDA toolkit ($CUDA_HOME/bin, /usr/local/cuda/bin), then the PyPI
wheel `nvidia-cuda-cuobjdump` in this Python's site-packages (`nvidia/cu13/bin/cuobjdump` in 13.x,
`nvidia/cuda_cuobjdump/bin/cuobjdump` in 12.x; the wheel installs no console script).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

from imagematrix.model.errors import RuntimeFailure

TIMEOUT_S = 120.0  # a 105 MB libcurand lists in about 0.2 s; this bounds a wedged or pathological run
INSTALL_HINT = "pip install nvidia-cuda-cuobjdump (or put a CUDA toolkit's bin/ on PATH, or set CUOBJDUMP)"
_WHEEL_BINARIES = ("cu13/bin/cuobjdump", "cuda_cuobjdump/bin/cuobjdump", "cu12/bin/cuobjdump")
_ENTRY_RE = re.compile(r"^(ELF|PTX) file\s+\d+:\s+(\S+)$")
_ARCH_RE = re.compile(r"\.sm_(\d{2,3}[af]?)\.(cubin|ptx)$")
_PREFIX_RE = re.compile(r"^cuobjdump \w+\s*:\s*")  # "cuobjdump fatal   : Invalid fatbin header in ..."
_NO_DEVICE_CODE = "does not contain device code"


def find() -> str | None:
    """The cuobjdump to run, or None."""
    named = os.environ.get("CUOBJDUMP")
    if named:
        return named if os.access(named, os.X_OK) else None
    found = shutil.which("cuobjdump")
    if found:
        return found
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and os.access(Path(home, "bin", "cuobjdump"), os.X_OK):
            return str(Path(home, "bin", "cuobjdump"))
    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        spec = None
    for root in (spec.submodule_search_locations or []) if spec else []:
        for rel in _WHEEL_BINARIES:
            candidate = Path(root, rel)
            if os.access(candidate, os.X_OK):
                return str(candidate)
    return None


def require() -> str:
    found = find()
    if not found:
        raise RuntimeFailure(f"cuobjdump is not installed: {INSTALL_HINT}")
    return found


def parse(output: str) -> tuple[frozenset[str], frozenset[str]]:
    """(SASS architectures `sm_XY[af]`, PTX versions `compute_XY[af]`) listed in `--list-elf --list-ptx` output."""
    sass: set[str] = set()
    ptx: set[str] = set()
    for line in output.splitlines():
        entry = _ENTRY_RE.match(line.strip())
        if not entry:
            continue
        arch = _ARCH_RE.search(entry.group(2))
        if not arch:
            raise RuntimeFailure(f"cuobjdump listed an entry whose architecture is not readable: {line.strip()!r}")
        if entry.group(1) == "ELF":
            sass.add(f"sm_{arch.group(1)}")
        else:
            ptx.add(f"compute_{arch.group(1)}")
    return frozenset(sass), frozenset(ptx)


def list_archs(path: Path, *, timeout: float = TIMEOUT_S) -> tuple[frozenset[str], frozenset[str]]:
    """The SASS architectures and PTX versions of the device code in path; two empty sets when it has none.

    A file cuobjdump cannot read (missing, not an ELF or fatbin, truncated) is a one-line RuntimeFailure naming it.
    """
    try:
        proc = subprocess.run([require(), "--list-elf", "--list-ptx", str(path)], capture_output=True, text=True,
                              errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeFailure(f"cuobjdump --list-elf --list-ptx {path}: did not finish within {timeout:g} s") from None
    if proc.returncode != 0:
        if _NO_DEVICE_CODE in proc.stderr or _NO_DEVICE_CODE in proc.stdout:
            return frozenset(), frozenset()
        lines = [line.strip() for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit status {proc.returncode}"
        raise RuntimeFailure(f"cuobjdump cannot read {path}: {_PREFIX_RE.sub('', reason)}")
    return parse(proc.stdout)
