"""Prebuilt flash-attn wheels (PyPI has only the sdist, whose setup.py silently compiles for hours when the
wheel download fails). The Dockerfile installs the wheel by URL; a mirror replaces the release base URL at
build time without changing the rendered Dockerfile.

Name: flash_attn-{ver}+cu{CUDA major}torch{torch major.minor}cxx11abi{TRUE|FALSE}-cp{XY}-cp{XY}-linux_x86_64.whl
C++ ABI: PyPI torch wheels use the old ABI up to torch 2.6 (FALSE) and the new one from 2.7 (TRUE).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Annotated

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError, field_validator

from imagematrix.knowledge import gpus
from imagematrix.model import fields, paths, yamlio
from imagematrix.model.errors import InputError
from imagematrix.model.matrix import Row

RELEASES = "https://github.com/Dao-AILab/flash-attention/releases/download"


def cxx11abi(torch: str) -> bool:
    return Version(torch).release[:2] >= (2, 7)


def wheel_name(*, flash_attn: str, cuda: str, torch: str, python: str) -> str:
    cuda_major = cuda.split(".")[0]
    torch_mm = ".".join(str(p) for p in Version(torch).release[:2])
    cp = "cp" + python.replace(".", "")
    abi = "TRUE" if cxx11abi(torch) else "FALSE"
    return f"flash_attn-{flash_attn}+cu{cuda_major}torch{torch_mm}cxx11abi{abi}-{cp}-{cp}-linux_x86_64.whl"


def wheel_path(*, flash_attn: str, cuda: str, torch: str, python: str) -> str:
    """Path below the release base URL (or a mirror laid out the same way)."""
    return f"v{flash_attn}/{wheel_name(flash_attn=flash_attn, cuda=cuda, torch=torch, python=python)}"


def wheel_url(*, flash_attn: str, cuda: str, torch: str, python: str, base: str = RELEASES) -> str:
    return f"{base.rstrip('/')}/{wheel_path(flash_attn=flash_attn, cuda=cuda, torch=torch, python=python)}"




# ---- compiling from the sdist (data: knowledge/flash-attn.yaml) -------------------------------------------------

WHEEL_REPOSITORY = "flash-attn-wheels"  # <registry>/flash-attn-wheels:<key>: compiled wheels, one small image each


class Sdist(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    file: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.+-]+\.tar\.gz$")]  # goes into a RUN line
    sha256: str

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", value):
            raise ValueError("expected 64 lowercase hex digits")
        return value


class ArchSupport(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    flash_attn: str
    arch: str
    cuda: str

    @field_validator("flash_attn", "cuda")
    @classmethod
    def _specifier(cls, value: str) -> str:
        SpecifierSet(value)
        return value

    @field_validator("arch")
    @classmethod
    def _arch(cls, value: str) -> str:
        if not fields.CAPABILITY_RE.fullmatch(value):
            raise ValueError("expected a compute capability such as \"9.0\"")
        return value


class CompileCost(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    core_seconds_per_unit: float
    units: int


class Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    sdists: dict[str, Sdist]
    archs: list[ArchSupport]
    build_requirements: list[str]
    toolchains: dict[str, list[str]]
    compile_cost: CompileCost

    @field_validator("build_requirements")
    @classmethod
    def _hashed(cls, value: list[str]) -> list[str]:
        for line in value:
            _check_hashed(line)
        return value

    @field_validator("toolchains")
    @classmethod
    def _toolchains(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for cuda, lines in value.items():
            if not re.fullmatch(r"\d+\.\d+", cuda):
                raise ValueError(f"{cuda!r}: key toolchains by CUDA major.minor, e.g. \"13.0\"")
            for line in lines:
                _check_hashed(line)
        return value


def _check_hashed(line: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+==[A-Za-z0-9_.+-]+ --hash=sha256:[0-9a-f]{64}", line):
        raise ValueError(f"{line!r}: write NAME==VERSION --hash=sha256:<64 hex digits>")


@functools.cache
def data(path: Path = paths.FLASH_ATTN) -> Data:
    doc = yamlio.load_mapping(path, keys="the sdists, toolchains, archs and compile cost of flash-attn")
    try:
        return Data.model_validate(doc)
    except (ValidationError, InvalidSpecifier) as exc:
        if isinstance(exc, ValidationError):
            first = exc.errors()[0]
            loc = [str(p) for p in first["loc"]]
            line = yamlio.line_of(doc, loc[0]) if isinstance(doc, dict) and loc and loc[0] in doc else None
            message = f"{'.'.join(loc) or 'top level'}: {first['msg'].removeprefix('Value error, ')}"
        else:
            line, message = None, str(exc)
        raise InputError(message, where=f"{path}:{line}" if line else str(path),
                         fix="see the comments in the file for each section's form") from None


def sdist(version: str) -> Sdist | None:
    return data().sdists.get(version)


def toolchain(cuda: str) -> list[str] | None:
    """Hash-pinned requirement lines of the CUDA compiler wheels for a row's CUDA, None when none is known."""
    return data().toolchains.get(cuda)


def _cap_key(cap: str) -> tuple[int, int]:
    major, minor = cap.split(".")
    return int(major), int(minor)


def supported_archs(flash_attn: str, cuda: str) -> list[str]:
    """Capabilities flash-attn's setup.py compiles for this version with this CUDA."""
    found = {a.arch for a in data().archs
             if SpecifierSet(a.flash_attn).contains(flash_attn, prereleases=True)
             and SpecifierSet(a.cuda).contains(cuda, prereleases=True)}
    return sorted(found, key=_cap_key)


def torch_capabilities(torch: str, cuda: str) -> list[str] | None:
    arch_list = gpus.torch_arch_list(torch, cuda)
    if arch_list is None:
        return None
    out = []
    for entry in arch_list:
        match = re.fullmatch(r"sm_(\d{1,2})(\d)[af]?", entry)
        if match:
            out.append(f"{match.group(1)}.{match.group(2)}")
    return sorted(set(out), key=_cap_key)


def archs(row: Row) -> list[str]:
    """The capabilities a compiled wheel of the row covers: the row's flash_attn_archs, else every capability
    that both flash-attn and the row's torch support (torch's list unknown: flash-attn's)."""
    if row.flash_attn_archs:
        return list(row.flash_attn_archs)
    fa = supported_archs(row.flash_attn, row.cuda)
    torch_caps = torch_capabilities(row.torch, row.cuda)
    return [a for a in fa if torch_caps is None or a in torch_caps]


def local_version(row: Row) -> str:
    """The local version label of the wheel, in flash-attn's release naming: cu13torch2.11cxx11abiTRUE."""
    torch_mm = ".".join(str(p) for p in Version(row.torch).release[:2])
    return f"cu{row.cuda.split('.')[0]}torch{torch_mm}cxx11abi{'TRUE' if cxx11abi(row.torch) else 'FALSE'}"


def key(row: Row) -> str:
    """The identity of a compiled wheel (an image tag): version, CUDA, torch, Python, C++ ABI, architectures.
    e.g. 2.8.3-cu130-torch2.11.0-cp312-cxx11abiTRUE-sm90"""
    sm = "-".join("sm" + a.replace(".", "") for a in archs(row))
    abi = "TRUE" if cxx11abi(row.torch) else "FALSE"
    return (f"{row.flash_attn}-cu{row.cuda.replace('.', '')}-torch{row.torch}-cp{row.python.replace('.', '')}"
            f"-cxx11abi{abi}-{sm}")


def compile_estimate(n_archs: int, cores: int) -> float:
    """Seconds a compile of that many architectures takes on that many cores (measured cost, linear)."""
    cost = data().compile_cost
    return cost.core_seconds_per_unit * cost.units * max(1, n_archs) / max(1, cores)


_WHEEL_RE = re.compile(r"^flash_attn-(?P<version>[^-+]+)\+(?P<local>[^-]+)-(?P<py>cp\d+)-(?P<abi>cp\d+)-linux_x86_64\.whl\Z")


def index_match(filename: str, row: Row) -> bool:
    """Whether a wheel file on an index fits the row: same version, CPython tag, and a local version naming the
    row's CUDA major, torch major.minor and C++ ABI (flash-attn's naming, cu13 or cu130; pt211 for torch 2.11)."""
    match = _WHEEL_RE.fullmatch(filename)
    cp = "cp" + row.python.replace(".", "")
    if not match or match.group("version") != row.flash_attn or match.group("py") != cp or match.group("abi") != cp:
        return False
    local = match.group("local").lower()
    major, minor = row.cuda.split(".")
    torch_mm = Version(row.torch).release[:2]
    cuda_ok = re.search(rf"cu{major}(?:{minor})?(?!\d)", local) is not None
    torch_ok = (f"torch{torch_mm[0]}.{torch_mm[1]}" in local) or re.search(rf"pt{torch_mm[0]}{torch_mm[1]}(?!\d)", local) is not None
    abi = re.search(r"cxx11abi(true|false)", local)
    abi_ok = abi is None or (abi.group(1) == "true") == cxx11abi(row.torch)
    return cuda_ok and torch_ok and abi_ok
