"""What a package version declares it needs: the Requires-Dist lines of its wheel's METADATA on the index (HTTP range
read, cached on disk), its Requires-Python, and the marker environment of a row (its Python on linux x86_64) to
evaluate them in.

Within `answered_by(answers)` both come from `answers` instead of the index: `outdated` checks its proposals against
the rules over the facts of its index snapshot, so an `--offline` run asks the network nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator
from email.parser import BytesHeaderParser
from typing import Protocol

from packaging.markers import UndefinedEnvironmentName
from packaging.requirements import InvalidRequirement, Requirement

from imagematrix.tools import pypi


class Answers(Protocol):
    """Where the facts come from instead of the index (a RuntimeFailure when it does not know one)."""

    def requires_dist(self, package: str, version: str) -> tuple[str, ...]: ...

    def requires_python(self, package: str, version: str) -> str | None: ...


_answers: contextvars.ContextVar[Answers | None] = contextvars.ContextVar("requires_answers", default=None)


@contextlib.contextmanager
def answered_by(answers: Answers) -> Iterator[None]:
    """Within: requires_dist and requires_python answer from `answers` (in this thread's context; a thread pool
    started inside carries it with contextvars.copy_context)."""
    token = _answers.set(answers)
    try:
        yield
    finally:
        _answers.reset(token)


def requires_dist(package: str, version: str) -> tuple[str, ...]:
    """Requires-Dist lines of package==version, from its wheel's METADATA (or from the answers in force)."""
    answers = _answers.get()
    return answers.requires_dist(package, version) if answers is not None else read_requires_dist(package, version)


@functools.cache
def read_requires_dist(package: str, version: str) -> tuple[str, ...]:
    """Requires-Dist lines of package==version, read from its wheel's METADATA on the index (cached on disk)."""
    meta = pypi.wheel_file(package, version, f"{package.replace('-', '_')}-{version}.dist-info/METADATA")
    return tuple(BytesHeaderParser().parsebytes(meta).get_all("Requires-Dist") or [])


def requires_python(package: str, version: str) -> str | None:
    """The Requires-Python of package==version's wheels ("" when none declared, None when it has no wheel), from
    the index (or from the answers in force)."""
    answers = _answers.get()
    return answers.requires_python(package, version) if answers is not None else pypi.requires_python(package, version)


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
