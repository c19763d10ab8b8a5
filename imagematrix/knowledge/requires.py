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
import re
from collections.abc import Iterator
from email.parser import BytesHeaderParser
from typing import Protocol

from packaging.markers import UndefinedEnvironmentName
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

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


# --- what holds for certain, whatever uv's environment beyond the row's: the pins' own verdict (stages/resolve) ---

# The marker variables a row's resolution fixes: uv resolves for `--python-version X.Y` on `--python-platform
# x86_64-manylinux_*` (linux, x86_64, posix), with the extras the row asks for. A marker that reads any other
# variable (python_full_version, implementation_name, platform_release, ...) is not decided here.
FIXED_MARKER_VARIABLES = frozenset({"python_version", "sys_platform", "platform_system", "platform_machine", "os_name",
                                    "extra"})
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_MARKER_WORDS = frozenset({"and", "or", "in", "not"})


def exact_pin(req: Requirement) -> str | None:
    """The version of a requirement that pins one version (`name==V`, no wildcard, no URL), as written; else None."""
    specs = list(req.specifier)
    if req.url or len(specs) != 1 or specs[0].operator != "==" or specs[0].version.endswith(".*"):
        return None
    try:
        Version(specs[0].version)
    except InvalidVersion:
        return None
    return specs[0].version


def surely_applies(req: Requirement, python: str, extras: set[str]) -> bool | None:
    """Whether req applies to a row on `python` (linux x86_64) installing its package with `extras` (besides its
    base requirements): True or False when its marker reads only FIXED_MARKER_VARIABLES, None (undecided) when it
    reads others."""
    if req.marker is None:
        return True
    names = set(_WORD.findall(_QUOTED.sub(" ", str(req.marker)))) - _MARKER_WORDS
    if not names <= FIXED_MARKER_VARIABLES:
        return None
    try:
        return any(req.marker.evaluate(row_environment(python, extra)) for extra in ("", *sorted(extras)))
    except UndefinedEnvironmentName:
        return None


_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def surely_applying(lines: tuple[str, ...], package: str, extras: set[str], python: str,
                    among: set[str] | None = None) -> list[Requirement]:
    """The requirements among package's Requires-Dist lines that certainly apply to a row on `python` installing it
    with `extras`, following the package's references to its own extras (verl 0.9: `verl[verl-core]; extra ==
    "vllm"`); those whose marker is undecided are left out. among: only requirements on these (canonical) names
    (the others' lines are not even parsed: transformers declares over 400)."""
    own = canonicalize_name(package)
    if among is not None:
        keep = among | {own}
        lines = tuple(line for line in lines if (m := _NAME.match(line)) and canonicalize_name(m.group(1)) in keep)
    reqs = parse(lines)
    wanted = {canonicalize_name(e) for e in extras}
    grew = True
    while grew:  # the extras that the wanted ones pull in through the package itself
        more = {canonicalize_name(e) for r in reqs if canonicalize_name(r.name) == own
                and surely_applies(r, python, wanted) for e in r.extras} - wanted
        wanted |= more
        grew = bool(more)
    return [r for r in reqs if canonicalize_name(r.name) != own and surely_applies(r, python, wanted)]


def surely_excludes(specifier: SpecifierSet, version: str) -> bool:
    """Whether no release that `==version` lets uv pick satisfies specifier: version itself, and its local variants
    (`==2.6.0` also takes 2.6.0+cu124 where an index has one). Decided only for specifiers without local versions and
    without `===`, for which a local variant matches exactly when its public version does (PEP 440); pre-releases
    count as allowed (a pin may name one)."""
    if any(s.operator == "===" or "+" in s.version for s in specifier):
        return False
    return not specifier.contains(version, prereleases=True)


_ORDER = {">": 0, ">=": 0, "~=": 1, "==": 1, "===": 1, "!=": 2, "<=": 3, "<": 3}


def shown(specifier: SpecifierSet) -> str:
    """A specifier as a resolver's message writes it: lower bounds first, then exclusions, then upper bounds
    (`>=0.7.3,<=0.8.5`; packaging's str() sorts them as text)."""
    specs = sorted(specifier, key=lambda s: (_ORDER.get(s.operator, 1), s.version))
    return ",".join(str(s) for s in specs)
