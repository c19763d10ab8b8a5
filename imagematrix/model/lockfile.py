"""The lock file format: uv's hash-pinned requirements (the body) under a header with the input digest, the
body's own digest (so a hand edit of the body, a changed hash included, is found offline) and, for a flash-attn row,
the flash-attn sdist; parsed entries."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from packaging.utils import canonicalize_name

LOCK_FORMAT = 1



LOCK_HEADER = "# DO NOT EDIT: written by `python build.py lock` from matrix.yaml."



DIGEST_RE = re.compile(r"^# input-digest: (sha256:[0-9a-f]{64})$", re.M)
EXCLUDE_NEWER_RE = re.compile(r"^# exclude-newer: (\S+)$", re.M)
BODY_DIGEST_RE = re.compile(r"^# body-digest: (sha256:[0-9a-f]{64})\n", re.M)
# The flash-attn sdist a row compiles from (PyPI has no flash-attn wheel, so it is no entry of uv's body): its file
# name and sha256 as the index's simple page gives them, written by `lock` for a row with flash_attn.
FLASH_ATTN_SDIST_LINE_RE = re.compile(r"^# flash-attn-sdist:(.*)\n", re.M)
FLASH_ATTN_SDIST_RE = re.compile(r" (?P<file>[A-Za-z0-9_.+-]+\.tar\.gz) sha256:(?P<sha256>[0-9a-f]{64})")


def flash_attn_sdist_line(file: str, sha256: str) -> str:
    return f"# flash-attn-sdist: {file} sha256:{sha256}"


def flash_attn_sdist(text: str) -> tuple[str, str] | None:
    """(file name, sha256) the lock's header records for the flash-attn sdist; None when it records none.
    ValueError for a line that is not of the form flash_attn_sdist_line writes (its file name goes into a RUN line)."""
    header, _ = split(text)
    match = FLASH_ATTN_SDIST_LINE_RE.search(header)
    if match is None:
        return None
    parsed = FLASH_ATTN_SDIST_RE.fullmatch(match.group(1))
    if parsed is None:
        raise ValueError(f"its flash-attn-sdist line is not `<file>.tar.gz sha256:<64 hex digits>`: {match.group(1)[:80]!r}")
    return parsed.group("file"), parsed.group("sha256")


def split(text: str) -> tuple[str, str]:
    """The header (the leading comment lines) and the body (uv's output, from the first entry on)."""
    lines = text.splitlines(keepends=True)
    n = 0
    while n < len(lines) and lines[n].startswith("#"):
        n += 1
    return "".join(lines[:n]), "".join(lines[n:])


def body_digest(body: str) -> str:
    """What the `# body-digest:` header line records: sha256 of the body's exact bytes."""
    return "sha256:" + hashlib.sha256(body.encode()).hexdigest()


def body_digest_problem(text: str) -> str | None:
    """Why the body is not what `lock` wrote under this header (None: it is)."""
    header, body = split(text)
    match = BODY_DIGEST_RE.search(header)
    if match is None:
        return "it records no body digest (`# body-digest:`)"
    if match.group(1) != body_digest(body):
        return "its body differs from what `lock` wrote (the body digest does not match: edited by hand?)"
    return None


def file_sha256(text: str) -> str:
    """The lock's sha256 as image labels, provenance and GPU records carry it: the file without its body-digest
    line and its flash-attn-sdist line. The first is a function of the rest; the sdist's file name and sha256 reach
    the image's input digest through the Dockerfile's compile stage, where the row can compile (nowhere else does a
    build read them). Both came after the first images were
    published, so leaving them out keeps every published digest valid (and a lock that gains the sdist line, the
    same pins, renders the same context)."""
    header, body = split(text)
    header = FLASH_ATTN_SDIST_LINE_RE.sub("", BODY_DIGEST_RE.sub("", header, count=1), count=1)
    return hashlib.sha256((header + body).encode()).hexdigest()



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
    lines: list[str] = []  # the current entry's lines (joined once at its end: a lock has ~6000 hash lines)
    in_via = False
    for line in text.splitlines():
        if line.startswith("    --hash"):  # most lines: the fast path of the branch below
            if current is not None:
                lines.append(line.rstrip() + "\n")
            continue
        if not line.strip():
            continue
        if not line.startswith((" ", "#")):
            if current is not None:
                current.text = "".join(lines)
            name, _, rest = line.partition("==")
            version = rest.split()[0].rstrip("\\").strip()
            name = canonicalize_name(name.split("[")[0])
            current = entries[name] = LockEntry(name=name, version=version)
            lines = [line.rstrip() + "\n"]
            in_via = False
            continue
        stripped = line.strip()
        if current is None:
            continue
        if stripped.startswith("--hash"):
            lines.append(line.rstrip() + "\n")
        elif stripped.startswith("# via"):
            after = stripped[len("# via"):].strip()
            in_via = not after
            if after:
                current.via.add(canonicalize_name(after.split()[0]))
        elif in_via and stripped.startswith("#"):
            parent = stripped.lstrip("#").strip()
            if parent and not parent.startswith("-"):
                current.via.add(canonicalize_name(parent.split()[0]))
    if current is not None:
        current.text = "".join(lines)
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


def pins_digest(text: str) -> str:
    """sha256 of what a lock installs: every entry's pin and hashes, sorted; header and annotations left out, so a
    new header line does not make the same wheels look different."""
    entries = sorted(entry.text for entry in parse(text).values())
    return hashlib.sha256("".join(entries).encode()).hexdigest()
