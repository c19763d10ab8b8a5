"""Resolution and locks, with uv (`uv pip compile`), for the row's Python version on linux x86_64.

A row's resolution input is its pins (verl with its `[vllm]` extra, so uv checks verl's declared vLLM range),
plus uv overrides for pins that deliberately leave a declared range. The lock is `locks/<row-id>.txt`:
uv's hash-pinned output under a header that records the digest of the resolution input, so `validate`
can tell when a lock no longer matches its row.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from imagematrix.model import paths
from imagematrix.model.errors import InputError, InputErrors, RuntimeFailure
from imagematrix.model.matrix import Matrix, Row
from imagematrix.tools import pypi

# Wheels for this platform run on glibc >= 2.35 (Ubuntu 22.04, Debian 12): every supported base.
PLATFORM = "x86_64-manylinux_2_35"
LOCK_FORMAT = 1
LOCK_HEADER = "# DO NOT EDIT: written by `python build.py lock` from matrix.yaml."
DIGEST_RE = re.compile(r"^# input-digest: (sha256:[0-9a-f]{64})$", re.M)


@dataclass(frozen=True)
class Inputs:
    """What uv resolves for a row."""

    requirements: str
    overrides: str
    python: str

    def digest(self) -> str:
        payload = json.dumps(
            {"format": LOCK_FORMAT, "platform": PLATFORM, "python": self.python,
             "requirements": self.requirements, "overrides": self.overrides},
            sort_keys=True,
        )
        return "sha256:" + hashlib.sha256(payload.encode()).hexdigest()


def inputs(row: Row) -> Inputs:
    overridden = {canonicalize_name(n) for n in row.overrides}
    # verl's [vllm] extra makes uv check verl's declared vLLM range; a row that overrides vllm leaves that
    # range on purpose (its override carries the reason), so it installs plain verl.
    verl = "verl==" if "vllm" in overridden else "verl[vllm]=="
    lines = [f"{verl}{row.verl}", f"vllm=={row.vllm}", f"torch=={row.torch}",
             f"tensordict=={row.tensordict}", f"transformers=={row.transformers}"]
    lines += [f"{name}=={version}" for name, version in sorted(row.extras.items())]
    if row.flash_attn:
        # flash-attn itself is a prebuilt wheel installed with --no-deps (PyPI has only its sdist);
        # its one runtime dependency besides torch is locked here.
        lines.append("einops")
    overrides = [f"{name}=={o.version}" for name, o in sorted(row.overrides.items())]
    return Inputs(requirements="\n".join(lines) + "\n",
                  overrides="\n".join(overrides) + ("\n" if overrides else ""),
                  python=row.python)


def _uv() -> str:
    """uv's binary as the `uv` package finds it (beside this Python, also in a venv that is not activated), else PATH."""
    try:
        from uv import find_uv_bin
        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        pass
    uv = shutil.which("uv")
    if not uv:
        raise RuntimeFailure("uv is not installed: run `pip install -e .` (it brings uv) or `pip install uv`")
    return uv


def uv_compile(requirements: str, python: str, *, overrides: str = "", constraints: str = "", hashes: bool = False,
               offline: bool = False) -> subprocess.CompletedProcess:
    """`uv pip compile` of requirements text for python on PLATFORM; uv's process (stdout: the resolution)."""
    with tempfile.TemporaryDirectory(prefix="imagematrix-") as tmp:
        Path(tmp, "requirements.in").write_text(requirements)
        # Paths relative to the temp dir (uv runs there): uv writes `# via -r <path>` into the lock, and a random
        # temp path would make every re-lock differ, and with it the lock digest and the image's input digest.
        cmd = [_uv(), "pip", "compile", "requirements.in", "--python-version", python, "--python-platform", PLATFORM,
               "--no-header", "--quiet", "--color", "never", "--annotation-style", "split"]
        for option, name, text in (("--override", "overrides.txt", overrides),
                                   ("--constraint", "constraints.txt", constraints)):
            if text:
                Path(tmp, name).write_text(text)
                cmd += [option, name]
        if hashes:
            cmd.append("--generate-hashes")
        if offline:
            cmd.append("--offline")
        return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"}, cwd=tmp)


def compile_(row: Row, *, hashes: bool, offline: bool = False) -> str:
    """Run `uv pip compile` for the row; returns uv's requirements output.

    Unsatisfiable pins raise InputError with the resolver's explanation; anything else RuntimeFailure.
    """
    spec = inputs(row)
    proc = uv_compile(spec.requirements, row.python, overrides=spec.overrides, hashes=hashes, offline=offline)
    if proc.returncode == 0:
        return proc.stdout
    message = proc.stderr.strip()
    if offline:
        raise RuntimeFailure(message)
    if "No solution found" in message or "requires-python" in message.lower() or "unsatisfiable" in message:
        raise _conflict(row, message)
    raise RuntimeFailure(f"row {row.id}: uv pip compile failed:\n{_indent(message)}")


def resolve(row: Row, *, hashes: bool = False) -> str:
    """Check the row's Python against its pins, then resolve: from uv's cache first (fast when warm),
    then over the network."""
    errors = check_python(row)
    if errors:
        raise InputErrors(errors)
    try:
        return compile_(row, hashes=hashes, offline=True)
    except RuntimeFailure:
        # Never a verdict: offline, uv answers "there is no version of X" for a cache miss (verl[vllm]==V), for an
        # index page cached before a release, and for a dead index alike. Only the network resolution decides.
        return compile_(row, hashes=hashes, offline=False)


def _conflict(row: Row, message: str) -> InputError:
    return InputError(f"pins cannot be resolved together:\n{_indent(message)}", where=f"row {row.id}",
                      fix="change the conflicting pin (or add an `overrides:` entry with a reason if the conflict is "
                          "deliberate)")


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


# --- lock files ---------------------------------------------------------------------------------------------


@dataclass
class LockEntry:
    name: str  # canonical name
    version: str
    via: set[str] = field(default_factory=set)
    text: str = ""  # the entry's lines (pin and hashes, without annotations)


def parse(text: str) -> dict[str, LockEntry]:
    """Parse uv's requirements output (split annotations) into entries keyed by canonical name."""
    entries: dict[str, LockEntry] = {}
    current: LockEntry | None = None
    in_via = False
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line.startswith((" ", "#")):
            name, _, rest = line.partition("==")
            version = rest.split()[0].rstrip("\\").strip()
            name = canonicalize_name(name.split("[")[0])
            current = entries[name] = LockEntry(name=name, version=version, text=line.rstrip() + "\n")
            in_via = False
            continue
        stripped = line.strip()
        if current is None:
            continue
        if stripped.startswith("--hash"):
            current.text += line.rstrip() + "\n"
        elif stripped.startswith("# via"):
            after = stripped[len("# via"):].strip()
            in_via = not after
            if after:
                current.via.add(canonicalize_name(after.split()[0]))
        elif in_via and stripped.startswith("#"):
            parent = stripped.lstrip("#").strip()
            if parent and not parent.startswith("-"):
                current.via.add(canonicalize_name(parent.split()[0]))
    return entries


def torch_closure(entries: dict[str, LockEntry]) -> list[LockEntry]:
    """torch and the packages that only torch (transitively) needs: CUDA runtime wheels, triton, sympy...

    This subset depends only on the torch version (and Python/platform), so it forms the shared base layer.
    """
    if "torch" not in entries:
        return []
    members = {"torch"}
    grew = True
    while grew:
        grew = False
        for entry in entries.values():
            if entry.name not in members and entry.via and entry.via <= members:
                members.add(entry.name)
                grew = True
    return [entries[n] for n in sorted(members)]


def torch_cuda(entries: dict[str, LockEntry]) -> str | None:
    """CUDA major.minor of the locked torch wheel, read from its CUDA runtime dependency."""
    for name in ("nvidia-cuda-runtime-cu12", "nvidia-cuda-runtime-cu11", "nvidia-cuda-runtime"):
        if name in entries:
            return ".".join(entries[name].version.split(".")[:2])
    return None


def lock_path(matrix: Matrix, row: Row) -> Path:
    return matrix.root / "locks" / f"{row.id}.txt"


def tools_lock_path(matrix: Matrix) -> Path:
    return matrix.root / "locks" / "tools.txt"


def lock_tools(matrix: Matrix) -> str:
    """Hash-pinned lock of the build tools installed in every image (uv), from dockerfiles/tools.in."""
    spec = paths.DOCKERFILES / "tools.in"
    cmd = [_uv(), "pip", "compile", str(spec), "--python-platform", PLATFORM, "--generate-hashes",
           "--no-header", "--quiet", "--color", "never"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeFailure(f"uv pip compile {spec.name} failed:\n{_indent(proc.stderr)}")
    return f"{LOCK_HEADER}\n# build tools, from dockerfiles/tools.in\n" + proc.stdout


def lock_text(row: Row, compiled: str) -> str:
    spec = inputs(row)
    header = [
        LOCK_HEADER,
        f"# row: {row.id}",
        f"# input-digest: {spec.digest()}",
        f"# python: {row.python}  platform: {PLATFORM}",
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
    match = DIGEST_RE.search(path.read_text())
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


def check_cuda(row: Row, entries: dict[str, LockEntry]) -> InputError | None:
    cuda = torch_cuda(entries)
    if cuda is not None and cuda != row.cuda:
        return InputError(
            f"cuda is {row.cuda} but torch {row.torch} from PyPI is built for CUDA {cuda}",
            where=f"row {row.id}, field cuda",
            fix=f"set `cuda: \"{cuda}\"` (the CUDA of the torch wheel that gets installed)",
        )
    return None


def check_python(row: Row) -> list[InputError]:
    """The row's Python against every pin's declared Requires-Python (uv ignores their upper bounds)."""
    errors = []
    for package, version in sorted(row.pins().items()):
        if package == "flash-attn":  # a prebuilt wheel per cpXY: its name carries the Python
            continue
        declared = pypi.requires_python(package, version)
        if declared and not SpecifierSet(declared).contains(row.python + ".0", prereleases=True):
            errors.append(InputError(
                f"{package} {version} requires Python {declared}, the row has {row.python}",
                where=f"row {row.id}, field python",
                fix=f"pick a Python within {declared} (and a base that packages it), or another {package}",
            ))
    return errors


def parallel(func, rows: list[Row], jobs: int = 4) -> list[tuple[Row, object]]:
    """Run func(row) for each row in threads; returns (row, result or exception) in row order."""

    def call(row: Row):
        try:
            return func(row)
        except (InputError, RuntimeFailure) as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(zip(rows, pool.map(call, rows), strict=True))
