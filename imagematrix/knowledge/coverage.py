"""Which libraries decide a row's GPU verdict, and what decides its driver (data: knowledge/coverage.yaml).

- rules(): the libraries (name, path patterns, required, from, combine, jit), the arm64-only capabilities, the
  driver section; library_of(path) names the library a file belongs to (the first whose pattern matches it).
"""

from __future__ import annotations

import fnmatch
import functools
from dataclasses import dataclass
from pathlib import Path

from imagematrix.model import paths, yamlio
from imagematrix.model.errors import InputError

COVERAGE = paths.KNOWLEDGE / "coverage.yaml"
OTHER = "other"
COMBINES = ("all", "any")

Capability = tuple[int, int]


@dataclass(frozen=True)
class Library:
    name: str
    patterns: tuple[str, ...]
    required: bool
    since: Capability | None  # `from`: used from this capability on
    combine: str
    jit: str = ""
    judged: bool = True  # false: its fatbin does not hold its kernels (cuFFT): listed, never judged
    note: str = ""

    def matches(self, path: str) -> bool:
        return any(fnmatch.fnmatchcase(path, pattern) for pattern in self.patterns)

    def used_on(self, cap: Capability) -> bool:
        return self.since is None or tuple(cap) >= self.since


@dataclass(frozen=True)
class Rules:
    libraries: tuple[Library, ...]
    arm64_only: frozenset[Capability]
    toolkit_wheels: tuple[str, ...]
    runtime_wheels: tuple[str, ...]
    forward_compat_package: str
    forward_compat_gpus: tuple[str, ...]
    forward_compat_note: str

    def library(self, name: str) -> Library | None:
        return next((lib for lib in self.libraries if lib.name == name), None)

    def library_of(self, path: str) -> str:
        return next((lib.name for lib in self.libraries if lib.matches(path)), OTHER)


def _cap(text) -> Capability:
    major, _, minor = str(text).partition(".")
    if not (major.isdigit() and minor.isdigit()):
        raise ValueError(f"{text!r} is not a capability like 8.0")
    return int(major), int(minor)


@functools.cache
def rules(path: Path = COVERAGE) -> Rules:
    doc = yamlio.load_mapping(path, keys="`libraries`, `arm64_only` and `driver`")
    try:
        libraries, names = [], set()
        for entry in doc["libraries"]:
            name = str(entry["name"])
            if name in names or name == OTHER:
                raise ValueError(f"library {name!r} is listed twice (or is the reserved name {OTHER!r})")
            names.add(name)
            patterns = entry["paths"]
            if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) and p for p in patterns):
                raise ValueError(f"library {name}: `paths` must be a non-empty list of patterns")
            combine = str(entry.get("combine", "all"))
            if combine not in COMBINES:
                raise ValueError(f"library {name}: combine {combine!r} is not one of {', '.join(COMBINES)}")
            if not isinstance(entry["required"], bool):
                raise ValueError(f"library {name}: `required` must be true or false")
            since = _cap(entry["from"]) if entry.get("from") is not None else None
            judged = entry.get("judged", True)
            if not isinstance(judged, bool):
                raise ValueError(f"library {name}: `judged` must be true or false")
            libraries.append(Library(name, tuple(patterns), entry["required"], since, combine,
                                     " ".join(str(entry.get("jit", "")).split()), judged,
                                     " ".join(str(entry.get("note", "")).split())))
        driver = doc["driver"]
        forward = driver["forward_compat"]
        return Rules(tuple(libraries), frozenset(_cap(c) for c in doc["arm64_only"]),
                     tuple(str(w) for w in driver["toolkit_wheels"]), tuple(str(w) for w in driver["runtime_wheels"]),
                     str(forward["package"]), tuple(str(g) for g in forward["gpus"]), " ".join(str(forward["note"]).split()))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        detail = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
        raise InputError(f"malformed coverage rules: {detail}", where=str(path),
                         fix="see the comment at the top of the file for its form") from None
