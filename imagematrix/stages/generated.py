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
from imagematrix.stages.render import Rendered, context_name

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


def inputs_digest(matrix: Matrix, row: Row, patch_dir: Path = paths.PATCHES,
                  platform: str = DEFAULT_PLATFORM) -> str:
    """A digest of everything render reads for the row's context for platform: its fields (base digest included), the
    platform's lock, the tools' lock, the templates, the patches, the in-image code it copies and the knowledge
    files. Reading only, no rendering."""
    fields = {k: v for k, v in dataclasses.asdict(row).items() if k not in NOT_RENDERED}
    if row.platforms == (DEFAULT_PLATFORM,):  # an amd64-only row reads as it did before rows had platforms
        del fields["platforms"]
    extra = {} if platform == DEFAULT_PLATFORM else {"context_platform": platform}
    h = hashlib.sha256(json.dumps({**fields, **extra, "base_digest": row.base_digest}, sort_keys=True,
                                  default=repr).encode())
    files = [locks.lock_path(matrix, row, platform), locks.tools_lock_path(matrix), *KNOWLEDGE_FILES,
             *(paths.IN_IMAGE / name for name in IN_IMAGE_FILES),
             *sorted(p for d in (paths.TEMPLATES, patch_dir) for p in d.rglob("*") if p.is_file())]
    for path in files:
        content = path.read_bytes() if path.is_file() else b"\0missing"
        h.update(str(path.name).encode() + b"\0" + hashlib.sha256(content).digest())
    return "sha256:" + h.hexdigest()


def record(matrix: Matrix, item: Rendered, patch_dir: Path = paths.PATCHES) -> bytes:
    """The row's <row-id>.inputs: its context's input digest and the digest of render's inputs."""
    return (json.dumps({"context": item.context_digest(),
                        "inputs": inputs_digest(matrix, item.row, patch_dir, item.platform)},
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
                changed.append(item.name)
            _write_record(out / f"{item.name}{RECORD_SUFFIX}", record(matrix, item, patch_dir))
        if prune:
            for stale in _stale_dirs(out, rendered, keep):
                shutil.rmtree(stale)
                changed.append(stale.name)
            for stale in _stale_records(out, rendered, keep):
                stale.unlink()
    return changed


def _write_row(out: Path, item: Rendered) -> bool:
    target = out / item.name
    if _read_tree(target) == item.files:
        return False
    staging = Path(tempfile.mkdtemp(prefix=f".{item.name}.", dir=out))
    staging.chmod(0o755)
    for name, content in item.files.items():
        (staging / name).write_bytes(content)
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{item.name}.old.", dir=out))
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
    keep = {item.name for item in rendered} | set(kept)
    return sorted(p for p in out.iterdir() if p.is_dir() and _row_of(p.name) not in kept and p.name not in keep
                  and not p.name.startswith("."))


def _row_of(name: str) -> str:
    """The row id of a context directory's (or record's) name: `<row-id>` or `<row-id>@<platform>`."""
    return name.split("@", 1)[0]


def _stale_records(out: Path, rendered: list[Rendered], kept: frozenset[str] = frozenset()) -> list[Path]:
    keep = {item.name for item in rendered} | set(kept)
    return sorted(p for p in out.glob(f"*{RECORD_SUFFIX}") if p.is_file() and p.name[:-len(RECORD_SUFFIX)] not in keep
                  and _row_of(p.name[:-len(RECORD_SUFFIX)]) not in kept)


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
        on_disk = _read_tree(out / item.name)
        if on_disk is None:
            problems.append(f"{item.name}: not rendered")
            continue
        for name in sorted(set(on_disk) | set(item.files)):
            if name not in on_disk:
                problems.append(f"{item.name}/{name}: missing")
            elif name not in item.files:
                problems.append(f"{item.name}/{name}: not produced by the matrix")
            elif on_disk[name] != item.files[name]:
                problems.append(f"{item.name}/{name}: differs")
        record_path = out / f"{item.name}{RECORD_SUFFIX}"
        if not record_path.is_file() or record_path.read_bytes() != record(matrix, item, patch_dir):
            problems.append(f"{record_path.name}: {'missing' if not record_path.is_file() else 'differs'}")
    if full:
        problems += [f"{p.name}: no such row in the matrix" for p in _stale_dirs(out, rendered, keep)]
        problems += [f"{p.name}: no such row in the matrix" for p in _stale_records(out, rendered, keep)]
    problems += [f"{p.name}: left by a render that did not finish (`render` removes it)" for p in _leftovers(out)]
    return problems


def read(matrix: Matrix, rows: list[Row], all_platforms: bool = False) -> list[Rendered]:
    """Each row's committed build context as render left it, checked against its record by reading only: an
    InputError naming every row whose context is missing, was edited after render, or was rendered from other inputs
    (the matrix row, its lock, a template, a patch or a knowledge file changed since). all_platforms: the context of
    each platform of a row, amd64 first (`build`), else the amd64 one only."""
    out = generated_dir(matrix)
    items, problems = [], []
    for row, platform in [(r, p) for r in rows for p in (r.platforms if all_platforms else (DEFAULT_PLATFORM,))]:
        name = context_name(row.id, platform)
        files = _read_tree(out / name)
        recorded = _recorded(out / f"{name}{RECORD_SUFFIX}")
        if files is None or recorded is None:
            problems.append(f"{name}: not rendered" if files is None else f"{name}{RECORD_SUFFIX}: missing")
            continue
        item = Rendered(row=row, files=files, platform=platform)
        if recorded.get("context") != item.context_digest():
            problems.append(f"{name}: its files were changed after render")
        elif recorded.get("inputs") != inputs_digest(matrix, row, platform=platform):
            problems.append(f"{name}: rendered from other inputs (its row, lock, a template, a patch or a "
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
