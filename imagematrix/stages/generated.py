"""Render's committed output, dockerfiles/generated/: each row's build context (<row-id>/) and the record of what it
was rendered from (<row-id>.inputs: the context's input digest and a digest of every file and field render read).

`render` writes both (write), `render --check` compares them with a fresh render (drift), and `build` and
`flash-attn get` take the context as it is (read): a context whose record no longer matches its files, or whose
inputs changed since it was rendered, is refused with the fix, without rendering anything.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

from imagematrix.knowledge import training
from imagematrix.model import paths
from imagematrix.model.errors import InputError
from imagematrix.model.fields import DEFAULT_PLATFORM
from imagematrix.model.matrix import Matrix, Row
from imagematrix.stages import locks
from imagematrix.stages.render import Rendered

LOCK_FILE = ".render.lock"
RECORD_SUFFIX = ".inputs"
# What render reads besides the row, its lock and the build tools' lock: the templates, the patches, the code it
# copies into the context and the knowledge it consults (bases.yaml enters through the row's base digest).
IN_IMAGE_FILES = ("patch_apply.py", "preflight.py", "flash_attn_compile.py")
KNOWLEDGE_FILES = (paths.ENV_DEFAULTS, paths.FLASH_ATTN, paths.GPUS, training.TRAINING)
# Row fields render does not read: the row's place in the file, and the GPUs it declares (the build's coverage step
# checks them against the image's binaries; they change nothing in the context).
NOT_RENDERED = ("line", "gpus", "gpus_jit")


def generated_dir(matrix: Matrix) -> Path:
    return matrix.root / "dockerfiles" / "generated"


def inputs_digest(matrix: Matrix, row: Row, patch_dir: Path = paths.PATCHES) -> str:
    """A digest of everything render reads for the row: its fields (base digest included), its lock, the tools' lock,
    the templates, the patches, the in-image code it copies and the knowledge files. Reading only, no rendering."""
    fields = {k: v for k, v in dataclasses.asdict(row).items() if k not in NOT_RENDERED}
    if row.platforms == (DEFAULT_PLATFORM,):  # an amd64-only row reads as it did before rows had platforms
        del fields["platforms"]
    h = hashlib.sha256(json.dumps({**fields, "base_digest": row.base_digest}, sort_keys=True, default=repr).encode())
    files = [locks.lock_path(matrix, row), locks.tools_lock_path(matrix), *KNOWLEDGE_FILES,
             *(paths.IN_IMAGE / name for name in IN_IMAGE_FILES),
             *sorted(p for d in (paths.TEMPLATES, patch_dir) for p in d.rglob("*") if p.is_file())]
    for path in files:
        content = path.read_bytes() if path.is_file() else b"\0missing"
        h.update(str(path.name).encode() + b"\0" + hashlib.sha256(content).digest())
    return "sha256:" + h.hexdigest()


def record(matrix: Matrix, item: Rendered, patch_dir: Path = paths.PATCHES) -> bytes:
    """The row's <row-id>.inputs: its context's input digest and the digest of render's inputs."""
    return (json.dumps({"context": item.context_digest(), "inputs": inputs_digest(matrix, item.row, patch_dir)},
                       indent=2, sort_keys=True) + "\n").encode()


def write(matrix: Matrix, rendered: list[Rendered], *, prune: bool, keep: frozenset[str] = frozenset(),
          patch_dir: Path = paths.PATCHES) -> list[str]:
    """Write each row directory atomically, then its record; with prune, remove directories (and records) of rows
    no longer in the matrix (keep: ids of rows in the matrix that did not render, whose directories stay).

    Returns the names of the row directories that changed.
    """
    out = generated_dir(matrix)
    out.mkdir(parents=True, exist_ok=True)
    changed = []
    # One render at a time (a second waits for the first), and what a killed one left (staging or .old
    # directories, which start with '.') is swept before anything is written.
    with open(out / LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for leftover in _leftovers(out):
            shutil.rmtree(leftover, ignore_errors=True)
        for item in rendered:
            if _write_row(out, item):
                changed.append(item.row.id)
            _write_record(out / f"{item.row.id}{RECORD_SUFFIX}", record(matrix, item, patch_dir))
        if prune:
            for stale in _stale_dirs(out, rendered, keep):
                shutil.rmtree(stale)
                changed.append(stale.name)
            for stale in _stale_records(out, rendered, keep):
                stale.unlink()
    return changed


def _write_row(out: Path, item: Rendered) -> bool:
    target = out / item.row.id
    if _read_tree(target) == item.files:
        return False
    staging = Path(tempfile.mkdtemp(prefix=f".{item.row.id}.", dir=out))
    staging.chmod(0o755)
    for name, content in item.files.items():
        (staging / name).write_bytes(content)
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{item.row.id}.old.", dir=out))
        target.rename(old / "x")
        staging.rename(target)
        shutil.rmtree(old)
    else:
        staging.rename(target)
    return True


def _write_record(path: Path, content: bytes) -> None:
    if not path.is_file() or path.read_bytes() != content:
        paths.write_atomic(path, content)


def _leftovers(out: Path) -> list[Path]:
    """Staging and .old directories of a render that did not finish (a kill between its renames)."""
    return sorted(p for p in out.iterdir() if p.is_dir() and p.name.startswith(".")) if out.is_dir() else []


def _stale_dirs(out: Path, rendered: list[Rendered], kept: frozenset[str] = frozenset()) -> list[Path]:
    """Row directories under out that no rendered row produces, nor a row in `kept` (staging dirs, which start with
    '.', aside)."""
    if not out.is_dir():
        return []
    keep = {item.row.id for item in rendered} | set(kept)
    return sorted(p for p in out.iterdir() if p.is_dir() and p.name not in keep and not p.name.startswith("."))


def _stale_records(out: Path, rendered: list[Rendered], kept: frozenset[str] = frozenset()) -> list[Path]:
    keep = {item.row.id for item in rendered} | set(kept)
    return sorted(p for p in out.glob(f"*{RECORD_SUFFIX}") if p.is_file() and p.name[:-len(RECORD_SUFFIX)] not in keep)


def _read_tree(path: Path) -> dict[str, bytes] | None:
    if not path.is_dir():
        return None
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


def drift(matrix: Matrix, rendered: list[Rendered], *, full: bool, keep: frozenset[str] = frozenset(),
          patch_dir: Path = paths.PATCHES) -> list[str]:
    """Differences between committed output and what the matrix renders (empty when in sync); keep: ids of rows in
    the matrix that did not render (their directories are not stale)."""
    out = generated_dir(matrix)
    problems = []
    for item in rendered:
        on_disk = _read_tree(out / item.row.id)
        if on_disk is None:
            problems.append(f"{item.row.id}: not rendered")
            continue
        for name in sorted(set(on_disk) | set(item.files)):
            if name not in on_disk:
                problems.append(f"{item.row.id}/{name}: missing")
            elif name not in item.files:
                problems.append(f"{item.row.id}/{name}: not produced by the matrix")
            elif on_disk[name] != item.files[name]:
                problems.append(f"{item.row.id}/{name}: differs")
        record_path = out / f"{item.row.id}{RECORD_SUFFIX}"
        if not record_path.is_file() or record_path.read_bytes() != record(matrix, item, patch_dir):
            problems.append(f"{record_path.name}: {'missing' if not record_path.is_file() else 'differs'}")
    if full:
        problems += [f"{p.name}: no such row in the matrix" for p in _stale_dirs(out, rendered, keep)]
        problems += [f"{p.name}: no such row in the matrix" for p in _stale_records(out, rendered, keep)]
    problems += [f"{p.name}: left by a render that did not finish (`render` removes it)" for p in _leftovers(out)]
    return problems


def read(matrix: Matrix, rows: list[Row]) -> list[Rendered]:
    """Each row's committed build context as render left it, checked against its record by reading only: an
    InputError naming every row whose context is missing, was edited after render, or was rendered from other inputs
    (the matrix row, its lock, a template, a patch or a knowledge file changed since)."""
    out = generated_dir(matrix)
    items, problems = [], []
    for row in rows:
        files = _read_tree(out / row.id)
        recorded = _recorded(out / f"{row.id}{RECORD_SUFFIX}")
        if files is None or recorded is None:
            problems.append(f"{row.id}: not rendered" if files is None else f"{row.id}{RECORD_SUFFIX}: missing")
            continue
        item = Rendered(row=row, files=files)
        if recorded.get("context") != item.context_digest():
            problems.append(f"{row.id}: its files were changed after render")
        elif recorded.get("inputs") != inputs_digest(matrix, row):
            problems.append(f"{row.id}: rendered from other inputs (its row, lock, a template, a patch or a "
                            "knowledge file changed since)")
        items.append(item)
    if problems:
        raise InputError("the generated build contexts differ from the matrix:\n  " + "\n  ".join(problems),
                         fix="run `python build.py render` (and commit the result)")
    return items


def _recorded(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
