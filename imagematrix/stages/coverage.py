"""CUDA architecture coverage of binaries: which GPUs their device code runs on (issue 28).

`read(paths)` lists, per file, the SASS architectures and PTX versions compiled into it (through cuobjdump, on the
CPU: no GPU needed), cached per file content (sha256) under the project cache. `verdict(coverage, capability)` says
how one file's device code runs on a GPU of that compute capability: `native` (machine code it can run), `ptx-jit`
(only PTX, which the driver JIT-compiles at first use: slow start, and a driver at least as new as the PTX's
toolkit), or `none` ("no kernel image is available for execution on the device").

The rules, from NVIDIA's CUDA C++ Programming Guide ("Binary Compatibility", "PTX Compatibility", and
"Feature Set Compiler Targets": arch-specific `a` and family-specific `f` targets, CUDA 12.0 / 12.9) and the
blog post "NVIDIA Blackwell and NVIDIA CUDA 12.9 Introduce Family-Specific Architecture Features"; they agree with
imagematrix.in_image.preflight.coverage, which every image carries (a test holds both to the same answers):

| suffix | SASS `sm_XY…` runs on capability C.D when | PTX `compute_XY…` is JIT-compiled on C.D when |
|---|---|---|
| none | C == X and D >= Y (a cubin for X.y runs on X.z, z >= y) | (C, D) >= (X, Y): PTX is forward compatible |
| `a` (sm_90a, sm_100a) | (C, D) == (X, Y): arch-specific features exist on that architecture only | (C, D) == (X, Y) |
| `f` (sm_100f, sm_120f) | C == X and D >= Y: the family (sm_100f on 10.0 and 10.3, sm_120f on 12.0 and 12.1) | C == X and D >= Y |

(The guide's caveat, not modelled here: binary compatibility between Tegra/Jetson and discrete GPUs of the same
major, e.g. sm_87 Orin and 8.6, is not promised.)
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

from imagematrix.model import paths
from imagematrix.model.errors import RuntimeFailure
from imagematrix.tools import cuobjdump

Coverage = tuple[frozenset[str], frozenset[str]]  # (SASS sm_XY[af], PTX compute_XY[af])
Capability = tuple[int, int]

NATIVE, PTX_JIT, NONE = "native", "ptx-jit", "none"
CACHE_VERSION = 1  # bump when what is cached changes

_ARCH_RE = re.compile(r"^(sm|compute)_(\d{1,2})(\d)([af]?)$")


def _same(built: Capability, cap: Capability) -> bool:
    return built == cap


def _same_major_newer_minor(built: Capability, cap: Capability) -> bool:
    return built[0] == cap[0] and built[1] <= cap[1]


def _any_newer(built: Capability, cap: Capability) -> bool:
    return built <= cap


# (kind, suffix) -> when code built for `built` runs on a GPU of capability `cap` (the table above)
RULES = {
    ("sm", ""): _same_major_newer_minor,
    ("sm", "a"): _same,
    ("sm", "f"): _same_major_newer_minor,
    ("compute", ""): _any_newer,
    ("compute", "a"): _same,
    ("compute", "f"): _same_major_newer_minor,
}


def _runs(entry: str, cap: Capability) -> bool:
    match = _ARCH_RE.match(entry)
    if not match:
        raise ValueError(f"not a CUDA architecture: {entry!r} (expected sm_XY or compute_XY, optionally a or f)")
    kind, major, minor, suffix = match.groups()
    return RULES[kind, suffix]((int(major), int(minor)), tuple(cap))


def verdict(coverage: Coverage, capability: Capability) -> str:
    """`native`, `ptx-jit` or `none`: how device code with these SASS and PTX architectures runs on capability."""
    sass, ptx = coverage
    if any(_runs(entry, capability) for entry in sass):
        return NATIVE
    if any(_runs(entry, capability) for entry in ptx):
        return PTX_JIT
    return NONE


def _cache_file(sha256: str) -> Path:
    return paths.cache_dir() / "coverage" / f"v{CACHE_VERSION}" / f"{sha256}.json"


def _cached(cache: Path) -> Coverage | None:
    try:
        data = json.loads(cache.read_text())
        sass, ptx = data["sass"], data["ptx"]
        if all(isinstance(e, str) and _ARCH_RE.match(e) for e in [*sass, *ptx]):
            return frozenset(sass), frozenset(ptx)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None  # absent or unreadable: read the file again, and rewrite the entry


def read_one(file: Path, sha256: str | None = None, fallback=None) -> tuple[str, Coverage, bool]:
    """(sha256, coverage, whether it came from the cache) of one file; sha256: the file's, when the caller has
    hashed it already. A file cuobjdump cannot read is a RuntimeFailure, unless `fallback(file)` (a reader of the
    fatbin headers) reads it; its answer is cached alike."""
    try:
        sha256 = sha256 or paths.file_sha256(file)
    except OSError as exc:
        raise RuntimeFailure(f"cannot read {file}: {exc.strerror or exc}") from None
    cache = _cache_file(sha256)
    found = _cached(cache)
    if found is not None:
        return sha256, found, True
    try:
        found = cuobjdump.list_archs(file)
    except RuntimeFailure as exc:
        if fallback is None:
            raise
        try:
            found = fallback(file)
        except RuntimeFailure:
            raise exc from None
    paths.write_atomic(cache, json.dumps({"sass": sorted(found[0]), "ptx": sorted(found[1])}) + "\n")
    return sha256, found, False


def read(files: Iterable[Path | str]) -> dict[Path, Coverage]:
    """{file: (SASS architectures, PTX versions)} of each file; a file cuobjdump cannot read is a RuntimeFailure."""
    return {file: read_one(file)[1] for file in map(Path, files)}


WHEEL_MEMBER_LIMIT = 4 << 30  # a shared object larger than this in a wheel is not read (as in an image's layers)


def read_wheel(wheel: Path) -> dict[str, Coverage]:
    """{member: (SASS, PTX)} of each shared object with device code in a wheel (a zip archive), each copied out to a
    scratch file in turn and read like any file (cached per content). A wheel that is not a zip archive, or a member
    over the limit, is a RuntimeFailure naming it."""
    out: dict[str, Coverage] = {}
    try:
        with zipfile.ZipFile(wheel) as archive, \
                tempfile.TemporaryDirectory(prefix="wheel-coverage-", dir=paths.scratch_dir()) as tmp:
            for info in archive.infolist():
                name = info.filename
                if info.is_dir() or not (name.endswith(".so") or ".so." in name.rsplit("/", 1)[-1]):
                    continue
                if info.file_size > WHEEL_MEMBER_LIMIT:
                    raise RuntimeFailure(f"{wheel.name}: {name} is {info.file_size} bytes, over the "
                                         f"{WHEEL_MEMBER_LIMIT >> 30} GiB a shared object is read up to")
                target = Path(tmp) / "member.so"
                with archive.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                found = read_one(target)[1]
                if found[0] or found[1]:
                    out[name] = found
    except (zipfile.BadZipFile, OSError) as exc:
        raise RuntimeFailure(f"cannot read the wheel {wheel}: {exc}") from None
    return out


def wheel_lacks(wheel: Path, archs: Iterable[str]) -> list[str]:
    """What a wheel compiled for archs (capabilities "8.0", "9.0") lacks, one line each: a shared object with device
    code without machine code for one of them (PTX alone is not what a compile for it makes), or no shared object
    with device code at all."""
    found = read_wheel(wheel)
    if not found:
        return [f"{wheel.name} holds no shared object with device code (a CUDA extension was expected)"]
    problems = []
    for name, (sass, ptx) in sorted(found.items()):
        for arch in archs:
            major, _, minor = arch.partition(".")
            if verdict((sass, ptx), (int(major), int(minor))) != NATIVE:
                has = " ".join(sorted(sass)) or "no SASS"
                problems.append(f"{name}: no sm_{major}{minor} machine code, though compiled for it (it has {has}"
                                + (f"; PTX {' '.join(sorted(ptx))}" if ptx else "") + ")")
    return problems
