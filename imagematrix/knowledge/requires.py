"""What a package version declares it needs: the Requires-Dist lines of its wheel's METADATA on the index (HTTP range
read, cached on disk), and the marker environment of a row (its Python on linux x86_64) to evaluate them in."""

from __future__ import annotations

import functools
from email.parser import BytesHeaderParser

from packaging.markers import UndefinedEnvironmentName
from packaging.requirements import InvalidRequirement, Requirement

from imagematrix.tools import pypi


@functools.cache
def requires_dist(package: str, version: str) -> tuple[str, ...]:
    """Requires-Dist lines of package==version, from its wheel's METADATA."""
    meta = pypi.wheel_file(package, version, f"{package.replace('-', '_')}-{version}.dist-info/METADATA")
    return tuple(BytesHeaderParser().parsebytes(meta).get_all("Requires-Dist") or [])


def parse(lines: tuple[str, ...]) -> list[Requirement]:
    """Requires-Dist lines as requirements (lines that do not parse are left out)."""
    reqs = []
    for line in lines:
        try:
            reqs.append(Requirement(line))
        except InvalidRequirement:
            continue
    return reqs


def row_environment(python: str, extra: str = "") -> dict[str, str]:
    """The marker environment of a row's image: CPython `python` on linux x86_64, with `extra`."""
    return {"python_version": python, "python_full_version": f"{python}.0", "sys_platform": "linux",
            "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
            "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": extra}


def applies(req: Requirement, python: str, extra: str = "") -> bool:
    """Whether req applies to a row on `python` that installs `extra` ("" for base requirements only)."""
    if req.marker is None:
        return extra == ""
    try:
        return req.marker.evaluate(row_environment(python, extra))
    except UndefinedEnvironmentName:
        return False


def base_requirements(lines: tuple[str, ...], python: str) -> list[Requirement]:
    """The requirements among Requires-Dist lines that a row on `python` installs without any extra."""
    return [req for req in parse(lines) if applies(req, python)]
