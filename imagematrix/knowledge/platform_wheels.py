"""Which releases of the packages with native code ship linux aarch64 wheels: knowledge/platform-wheels.yaml, as
`python -m imagematrix.assist.platform_wheels` read it from the index. validate and lock read it for a row's
linux/arm64 platform (uv is told to take those packages only as wheels; a pin of the row that the data lists without
an aarch64 wheel is refused before uv runs), pick and the docs for which rows serve Grace hosts."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ConfigDict, ValidationError

from imagematrix.model import datafile, paths, yamlio
from imagematrix.model.errors import InputError

PLATFORM_WHEELS = paths.KNOWLEDGE / "platform-wheels.yaml"
PYTHON_TAG_RE = re.compile(r"^(?:cp3(\d{1,2})(-abi3)?|py3(\d{0,2}))\Z")


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")
    native: bool = False
    aarch64: dict[str, list[str]] = {}
    x86_64_only: list[str] = []
    sdist_only: list[str] = []
    absent: bool = False


@dataclass(frozen=True)
class Data:
    read: str
    packages: dict[str, Record]


@functools.cache
def load() -> Data:
    """The data file, checked (a malformed one is bad input naming the file and the fix)."""
    doc = yamlio.load_mapping(PLATFORM_WHEELS, keys="`read:` and a `packages:` mapping")
    fix = "rewrite it: `python -m imagematrix.assist.platform_wheels`"
    packages = doc.get("packages")
    if not isinstance(packages, dict) or not isinstance(doc.get("read"), str):
        raise InputError("expected `read: <date>` and a `packages:` mapping", where=str(PLATFORM_WHEELS), fix=fix)
    out = {}
    for name, raw in packages.items():
        try:
            record = Record.model_validate(dict(raw) if isinstance(raw, dict) else raw)
            for version, tags in record.aarch64.items():
                Version(version)
                bad = [t for t in tags if not PYTHON_TAG_RE.fullmatch(t)]
                if bad:
                    raise ValueError(f"release {version}: {bad[0]!r} is not a Python tag (cp311, cp39-abi3, py3)")
        except (ValidationError, ValueError, InvalidVersion) as exc:
            detail = datafile.describe(exc) if isinstance(exc, ValidationError) else str(exc)
            raise InputError(f"package {name!r}: {detail}",
                             where=f"{PLATFORM_WHEELS}:{yamlio.line_of(packages, name)}", fix=fix) from None
        out[canonicalize_name(str(name))] = record
    return Data(read=str(doc["read"]), packages=out)


def native_packages() -> tuple[str, ...]:
    """The packages that must install from a wheel on an emulated platform (uv --only-binary), sorted."""
    return tuple(sorted(name for name, rec in load().packages.items() if rec.native and not rec.absent))


def tag_serves(tag: str, python: str) -> bool:
    """Whether a wheel's Python tag (cp311, cp38-abi3, py3, py311) installs on CPython `python` (3.X)."""
    match = PYTHON_TAG_RE.fullmatch(tag)
    if not match:
        return False
    minor = int(python.split(".")[1])
    if match.group(1) is not None:
        return minor >= int(match.group(1)) if match.group(2) else minor == int(match.group(1))
    digits = match.group(3)
    return not digits or int(digits) == minor


def aarch64_wheel(package: str, version: str, python: str) -> bool | None:
    """True when the release has an aarch64 wheel for the Python (or a pure one), False when the data records the
    release without one, None when the data does not know the package or the release (read before it)."""
    record = load().packages.get(canonicalize_name(package))
    if record is None or record.absent:
        return None
    wanted = _normal(version)
    for listed, tags in record.aarch64.items():
        if _normal(listed) == wanted:
            return any(tag_serves(t, python) for t in tags)
    if any(_normal(v) == wanted for v in (*record.x86_64_only, *record.sdist_only)):
        return False
    return None


def releases_with_aarch64(package: str, python: str) -> list[str]:
    """The releases with an aarch64 wheel for the Python, newest first (the data's order)."""
    record = load().packages.get(canonicalize_name(package))
    if record is None:
        return []
    return [v for v, tags in record.aarch64.items() if any(tag_serves(t, python) for t in tags)]


def missing_wheels(pins: dict[str, str], python: str) -> list[str]:
    """One line per pinned package the data records without an aarch64 wheel at its version, with the releases that
    have one (the newest few): `vllm 0.7.2 has no linux aarch64 wheel (the index has one for 0.34.0, 0.33.0, ...)`."""
    lines = []
    for name, version in pins.items():
        if aarch64_wheel(name, version, python) is False:
            serve = releases_with_aarch64(name, python)
            where = f"the index has one for {', '.join(serve[:4])}{', ...' if len(serve) > 4 else ''}" if serve else \
                "the index has no aarch64 wheel of any release"
            lines.append(f"{name} {version} has no linux aarch64 wheel for Python {python} ({where})")
    return lines


def _normal(version: str) -> Version | str:
    try:
        return Version(version)
    except InvalidVersion:
        return version
