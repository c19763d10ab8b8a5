"""verl's declared requirements, read from its wheel's METADATA on the index (HTTP range read, cached on disk):
what the verl-ranges rule checks and what add-row follows to pair verl with vLLM."""

from __future__ import annotations

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from imagematrix.knowledge import requires


def requires_dist(version: str) -> tuple[str, ...]:
    """Requires-Dist lines of verl==version (knowledge.requires)."""
    return requires.requires_dist("verl", version)


def requirements(version: str) -> list[Requirement]:
    """verl==version's Requires-Dist lines as requirements (lines that do not parse are left out)."""
    return requires.parse(requires_dist(version))


def declared(version: str, python: str) -> list[tuple[Requirement, str]]:
    """verl's requirements that apply to a row: its base requirements and those of its `vllm` extra (following
    verl's references to its own extras), for the row's Python on linux x86_64. (requirement, extra) pairs,
    extra "" for base requirements."""
    reqs = requirements(version)
    out: list[tuple[Requirement, str]] = []
    done: set[str] = set()
    todo = ["", "vllm"]
    while todo:
        extra = todo.pop(0)
        if extra in done:
            continue
        done.add(extra)
        for req in reqs:
            if not requires.applies(req, python, extra):
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
