"""flash-attn facts (knowledge/flash-attn.yaml) and the one constructor of a row's wheel spec, `wheel_spec(row)`.

PyPI has only the sdist, whose setup.py silently compiles for hours when the wheel download fails. The Dockerfile
installs a wheel image; the wheel comes from a mirror of the GitHub releases, an index, the registry or a compile of
the sdist (stages/flash_attn.py). The data: the sdists, the architectures flash-attn compiles for, the build
requirements and CUDA compiler wheels of the compile, its measured cost, and the prebuilt wheels of each release.
The spec's names (file name, local version, key, ABI) are model/flash_attn.py's.
"""

from __future__ import annotations

import functools
import itertools
import re
from pathlib import Path
from typing import Annotated

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints, ValidationError, field_validator

from imagematrix.knowledge import gpus
from imagematrix.model import fields, paths, yamlio
from imagematrix.model.errors import InputError
from imagematrix.model.flash_attn import Evidence, WheelSpec
from imagematrix.model.matrix import Row

# ---- the data: knowledge/flash-attn.yaml --------------------------------------------------------------------------


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


def _version(value: str) -> str:
    try:
        Version(value)
    except InvalidVersion:
        raise ValueError(f"{value!r} is not a version (write e.g. \"2.6\")") from None
    return value


TorchVersion = Annotated[str, AfterValidator(_version)]  # sorted as versions by the flash-attn-wheel rule


class WheelAxes(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    cuda: list[str] = []
    torch: list[TorchVersion] = []
    python: list[str] = []
    abi: list[bool] = []


class WheelSingle(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    cuda: str
    torch: TorchVersion
    python: str
    abi: bool


class WheelRelease(BaseModel):
    """The prebuilt wheels of one or more flash-attn releases (GitHub release assets)."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    versions: list[str]
    evidence: Evidence
    source: str
    matrix: WheelAxes
    exclude: list[WheelAxes] = []
    extra: list[WheelSingle] = []

    def wheels(self) -> set[tuple[str, str, str, bool]]:
        """Every (CUDA major, torch major.minor, Python, cxx11 ABI) with a prebuilt wheel (WheelSpec.table_key)."""
        m = self.matrix
        out = set(itertools.product(m.cuda, m.torch, m.python, m.abi))
        for ex in self.exclude:
            out = {w for w in out if not all(
                not axis or value in axis
                for axis, value in zip((ex.cuda, ex.torch, ex.python, ex.abi), w, strict=True))}
        out |= {(e.cuda, e.torch, e.python, e.abi) for e in self.extra}
        return out


class Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    sdists: dict[str, Sdist]
    archs: list[ArchSupport]
    build_requirements: list[str]
    toolchains: dict[str, list[str]]
    compile_cost: CompileCost
    prebuilt_wheels: list[WheelRelease]

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
    doc = yamlio.load_mapping(path, keys="the sdists, archs, toolchains, compile cost and prebuilt wheels of flash-attn")
    try:
        return Data.model_validate(doc)
    except (ValidationError, InvalidSpecifier) as exc:
        if isinstance(exc, ValidationError):
            first = exc.errors()[0]
            loc = [str(p) for p in first["loc"]]
            line = yamlio.line_at(doc, first["loc"])
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


def default_archs(flash_attn: str, torch: str, cuda: str) -> list[str]:
    """The capabilities a compiled wheel covers when the row names none (flash_attn_archs): every capability that
    both flash-attn and the row's torch support (torch's list unknown: flash-attn's)."""
    fa = supported_archs(flash_attn, cuda)
    torch_caps = torch_capabilities(torch, cuda)
    return [a for a in fa if torch_caps is None or a in torch_caps]


def compile_estimate(n_archs: int, cores: int) -> float:
    """Seconds a compile of that many architectures takes on that many cores (measured cost, linear)."""
    cost = data().compile_cost
    return cost.core_seconds_per_unit * cost.units * max(1, n_archs) / max(1, cores)


def prebuilt_release(version: str) -> WheelRelease | None:
    """The wheel table's entry of a flash-attn release, None when the table does not list it."""
    return next((r for r in data().prebuilt_wheels if version in r.versions), None)


def wheel_spec(row: Row) -> WheelSpec | None:
    """The row's flash-attn wheel (None without flash-attn): built once per row, every layer takes this one."""
    if not row.flash_attn:
        return None
    return _spec(row.flash_attn, row.cuda, row.torch, row.python, row.flash_attn_archs)


@functools.cache
def _spec(version: str, cuda: str, torch: str, python: str, row_archs: tuple[str, ...] | None) -> WheelSpec:
    release = prebuilt_release(version)
    return WheelSpec(version=version, cuda=cuda, torch=torch, python=python,
                     archs=tuple(row_archs) if row_archs else tuple(default_archs(version, torch, cuda)),
                     table=(lambda key: release.evidence if key in release.wheels() else None) if release else None)
