"""Stage lock: locks/<row-id>.txt (hash-pinned, header with the input digest) and locks/tools.txt; staleness."""

from __future__ import annotations

from pathlib import Path

from imagematrix.model import lockfile, paths
from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.model.matrix import Matrix, Row
from imagematrix.stages.resolve import _indent, inputs
from imagematrix.tools import uv

# --- lock files ---------------------------------------------------------------------------------------------


def lock_path(matrix: Matrix, row: Row) -> Path:
    return matrix.root / "locks" / f"{row.id}.txt"



def tools_lock_path(matrix: Matrix) -> Path:
    return matrix.root / "locks" / "tools.txt"



def lock_tools(matrix: Matrix) -> str:
    """Hash-pinned lock of the build tools installed in every image (uv), from dockerfiles/tools.in."""
    spec = paths.DOCKERFILES / "tools.in"
    proc = uv.compile_file(spec)
    if proc.returncode != 0:
        raise RuntimeFailure(f"uv pip compile {spec.name} failed:\n{_indent(proc.stderr)}")
    return f"{lockfile.LOCK_HEADER}\n# build tools, from dockerfiles/tools.in\n" + proc.stdout



def lock_text(row: Row, compiled: str) -> str:
    spec = inputs(row)
    header = [
        lockfile.LOCK_HEADER,
        f"# row: {row.id}",
        f"# input-digest: {spec.digest()}",
        f"# python: {row.python}  platform: {uv.PLATFORM}",
        "# resolution input:",
        *[f"#   {line}" for line in spec.requirements.splitlines()],
        *[f"#   override {line}" for line in spec.overrides.splitlines()],
    ]
    return "\n".join(header) + "\n" + compiled



def lock_status(matrix: Matrix, row: Row) -> str:
    """'ok', 'missing' or 'stale' (the lock was written for other pins)."""
    path = lock_path(matrix, row)
    if not path.exists():
        return "missing"
    match = lockfile.DIGEST_RE.search(path.read_text())
    return "ok" if match and match.group(1) == inputs(row).digest() else "stale"



def read_lock(matrix: Matrix, row: Row) -> str:
    status = lock_status(matrix, row)
    if status != "ok":
        raise InputError(
            f"lock is {status}: {lock_path(matrix, row).relative_to(matrix.root)}",
            where=f"row {row.id}",
            fix=f"run `python build.py lock --row {row.id}`",
        )
    return lock_path(matrix, row).read_text()

