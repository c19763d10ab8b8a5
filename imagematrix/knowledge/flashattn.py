"""Prebuilt flash-attn wheels (PyPI has only the sdist, whose setup.py silently compiles for hours when the
wheel download fails). The Dockerfile installs the wheel by URL; a mirror replaces the release base URL at
build time without changing the rendered Dockerfile.

Name: flash_attn-{ver}+cu{CUDA major}torch{torch major.minor}cxx11abi{TRUE|FALSE}-cp{XY}-cp{XY}-linux_x86_64.whl
C++ ABI: PyPI torch wheels use the old ABI up to torch 2.6 (FALSE) and the new one from 2.7 (TRUE).
"""

from __future__ import annotations

from packaging.version import Version

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


