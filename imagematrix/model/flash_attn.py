"""The flash-attn wheel of a row, as one immutable spec: what every layer names it by.

A row's wheel has one identity (version, CUDA, torch, Python, C++ ABI, GPU architectures) and several names, all
derived here from the same fields, once:

- the release file name, flash-attn's own naming of its GitHub release assets (and of a compile's output):
  flash_attn-{ver}+cu{CUDA major}torch{torch major.minor}cxx11abi{TRUE|FALSE}-cp{XY}-cp{XY}-linux_x86_64.whl
- its local version label, the part after "+": cu13torch2.11cxx11abiTRUE
- the registry key, the tag of flash-attn-wheels:<key> and the io.imagematrix.flash-attn.wheel label:
  2.8.3-cu130-torch2.11.0-cp312-cxx11abiTRUE-sm90
- the wheel table's key, (CUDA major, torch major.minor, Python, cxx11 ABI), as knowledge/flash-attn.yaml lists
  prebuilt wheels.

C++ ABI: PyPI torch wheels use the old ABI up to torch 2.6 (FALSE) and the new one from 2.7 (TRUE).
The spec is built by knowledge/flash_attn.wheel_spec(row), once per row (it adds the architectures and whether the
wheel table lists a prebuilt wheel); this module only names.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import InitVar, dataclass, field
from typing import Literal

from packaging.version import Version

RELEASES = "https://github.com/Dao-AILab/flash-attention/releases/download"
WHEEL_REPOSITORY = "flash-attn-wheels"  # <registry>/flash-attn-wheels:<key>: compiled wheels, one small image each

_WHEEL_RE = re.compile(r"^flash_attn-(?P<version>[^-+]+)\+(?P<local>[^-]+)-(?P<py>cp\d+)-(?P<abi>cp\d+)-linux_x86_64\.whl\Z")


Evidence = Literal["verified", "assumed"]


def cxx11abi(torch: str) -> bool:
    """Whether PyPI's torch wheels of this version use the new C++ ABI (torch 2.7 and later)."""
    return Version(torch).release[:2] >= (2, 7)


@dataclass(frozen=True, kw_only=True)
class WheelSpec:
    version: str  # flash-attn's
    cuda: str  # the row's CUDA, major.minor
    torch: str  # the row's torch, exact
    python: str  # the row's Python, major.minor
    archs: tuple[str, ...] = ()  # compute capabilities a compiled wheel covers ("9.0"), part of the key
    # the wheel table (knowledge/flash-attn.yaml, prebuilt_wheels) as a lookup: its evidence for a table key, or None
    table: InitVar[Callable[[tuple[str, str, str, bool]], Evidence | None] | None] = None
    # derived from the fields above, once, in __post_init__
    cuda_major: str = field(init=False)
    torch_mm: str = field(init=False)  # torch major.minor: "2.11"
    cxx11abi: bool = field(init=False)
    abi: str = field(init=False)  # "TRUE" or "FALSE", as flash-attn's names write it
    cp: str = field(init=False)  # CPython tag: "cp312"
    prebuilt: Evidence | None = field(init=False)  # the wheel table lists this wheel, with that evidence (a source)

    def __post_init__(self, table) -> None:
        torch_mm = ".".join(str(p) for p in Version(self.torch).release[:2])
        new_abi = cxx11abi(self.torch)
        for name, value in (("cuda_major", self.cuda.split(".")[0]), ("torch_mm", torch_mm), ("cxx11abi", new_abi),
                            ("abi", "TRUE" if new_abi else "FALSE"), ("cp", "cp" + self.python.replace(".", ""))):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "prebuilt", table(self.table_key) if table else None)

    @property
    def local_version(self) -> str:
        """The local version label in flash-attn's release naming: cu13torch2.11cxx11abiTRUE."""
        return f"cu{self.cuda_major}torch{self.torch_mm}cxx11abi{self.abi}"

    @property
    def filename(self) -> str:
        """The release asset's file name (a compile of the sdist writes the same)."""
        return f"flash_attn-{self.version}+{self.local_version}-{self.cp}-{self.cp}-linux_x86_64.whl"

    @property
    def release_path(self) -> str:
        """Path below the release base URL (or a mirror laid out the same way)."""
        return f"v{self.version}/{self.filename}"

    def url(self, base: str = RELEASES) -> str:
        return f"{base.rstrip('/')}/{self.release_path}"

    @property
    def arch_tags(self) -> tuple[str, ...]:
        """The architectures as nvcc and the key write them: ("80", "90")."""
        return tuple(a.replace(".", "") for a in self.archs)

    @property
    def key(self) -> str:
        """The identity of a compiled wheel (an image tag): version, CUDA, torch, Python, C++ ABI, architectures.
        e.g. 2.8.3-cu130-torch2.11.0-cp312-cxx11abiTRUE-sm90"""
        sm = "-".join("sm" + a for a in self.arch_tags)
        return f"{self.version}-cu{self.cuda.replace('.', '')}-torch{self.torch}-{self.cp}-cxx11abi{self.abi}-{sm}"

    @property
    def table_key(self) -> tuple[str, str, str, bool]:
        """(CUDA major, torch major.minor, Python, cxx11 ABI): how the wheel table lists prebuilt wheels."""
        return self.cuda_major, self.torch_mm, self.python, self.cxx11abi

    @property
    def wanted(self) -> str:
        """The wheel in words, for messages: 'flash-attn 2.8.3 wheel for cu13torch2.11cxx11abiTRUE cp312'."""
        return f"flash-attn {self.version} wheel for {self.local_version} {self.cp}"

    def fits(self, filename: str) -> bool:
        """Whether a wheel file on an index fits: same version, CPython tag, and a local version naming the same
        CUDA major, torch major.minor and C++ ABI (flash-attn's naming, cu13 or cu130; pt211 for torch 2.11)."""
        match = _WHEEL_RE.fullmatch(filename)
        if not match or match.group("version") != self.version or not match.group("py") == match.group("abi") == self.cp:
            return False
        local = match.group("local").lower()
        minor = self.cuda.split(".")[1]
        torch_major, torch_minor = self.torch_mm.split(".")
        cuda_ok = re.search(rf"cu{self.cuda_major}(?:{minor})?(?!\d)", local) is not None
        torch_ok = f"torch{self.torch_mm}" in local or re.search(rf"pt{torch_major}{torch_minor}(?!\d)", local) is not None
        abi = re.search(r"cxx11abi(true|false)", local)
        abi_ok = abi is None or (abi.group(1) == "true") == self.cxx11abi
        return cuda_ok and torch_ok and abi_ok
