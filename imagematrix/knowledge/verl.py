"""verl's declared requirements, read from its wheel's METADATA on the index (HTTP range read, cached on disk):
what the verl-ranges rule checks and what add-row follows to pair verl with vLLM."""

from __future__ import annotations

import functools
from email.parser import BytesHeaderParser

from packaging.markers import UndefinedEnvironmentName
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from imagematrix.tools import pypi


@functools.cache
def requires_dist(version: str) -> tuple[str, ...]:
    """Requires-Dist lines of verl==version, from its wheel's METADATA (HTTP range read, cached on disk)."""
    meta = pypi.wheel_file("verl", version, f"verl-{version}.dist-info/METADATA")
    return tuple(BytesHeaderParser().parsebytes(meta).get_all("Requires-Dist") or [])



def requirements(version: str) -> list[Requirement]:
    """verl==version's Requires-Dist lines as requirements (lines that do not parse are left out)."""
    reqs = []
    for line in requires_dist(version):
        try:
            reqs.append(Requirement(line))
        except InvalidRequirement:
            continue
    return reqs


def declared(version: str, python: str) -> list[tuple[Requirement, str]]:
    """verl's requirements that apply to a row: its base requirements and those of its `vllm` extra (following
    verl's references to its own extras), for the row's Python on linux x86_64. (requirement, extra) pairs,
    extra "" for base requirements."""
    reqs = requirements(version)
    env = {"python_version": python, "python_full_version": f"{python}.0", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
           "implementation_name": "cpython", "platform_python_implementation": "CPython"}
    out: list[tuple[Requirement, str]] = []
    done: set[str] = set()
    todo = ["", "vllm"]
    while todo:
        extra = todo.pop(0)
        if extra in done:
            continue
        done.add(extra)
        for req in reqs:
            if req.marker is None:
                applies = extra == ""
            else:
                try:
                    applies = req.marker.evaluate({**env, "extra": extra})
                except UndefinedEnvironmentName:
                    applies = False
            if not applies:
                continue
            if canonicalize_name(req.name) == "verl":
                todo.extend(sorted(req.extras))
            elif not any(r is req for r, _ in out):
                out.append((req, extra))
    return out


def vllm_extra_includes(version: str) -> tuple[str, ...]:
    """The extras of verl that its `[vllm]` extra installs through a reference to verl itself (verl 0.9:
    `verl[verl-core]; extra == "vllm"`): the core dependencies a row keeps by naming them when it overrides vllm."""
    out: set[str] = set()
    for req in requirements(version):
        if canonicalize_name(req.name) == "verl" and req.marker and "vllm" in str(req.marker):
            out |= {canonicalize_name(e) for e in req.extras} - {"vllm"}
    return tuple(sorted(out))


def requirement(version: str, vllm_overridden: bool, extras: tuple[str, ...] = ()) -> str:
    """verl's line in a resolution input. Its [vllm] extra makes uv check verl's declared vLLM range; a row that
    overrides vllm leaves that range on purpose (its override carries the reason), so it installs verl without
    [vllm], naming instead the extras that [vllm] brings besides its pins (verl 0.9's verl-core: TransferQueue and
    the rest that the trainer imports; rule verl-ranges checks that the row names them)."""
    names = sorted(set(extras) | (set() if vllm_overridden else {"vllm"}))
    return f"verl[{','.join(names)}]=={version}" if names else f"verl=={version}"


def vllm_range(version: str) -> SpecifierSet | None:
    """The vLLM range verl's `[vllm]` extra declares (None when it has no such extra)."""
    for req in requirements(version):
        if canonicalize_name(req.name) == "vllm" and req.marker and "vllm" in str(req.marker):
            return req.specifier
    return None
