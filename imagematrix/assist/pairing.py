"""Which verl to pair with a vLLM version, decided by resolution (uv), not by tables.

The order add-row tries, first that resolves wins:
  1. the newest verl: with its `[vllm]` extra when that admits the vLLM version (or when it has no such extra,
     plain), else without the extra, the row then carrying an `overrides: {vllm: ...}` entry with the reason;
  2. the older verl releases whose `[vllm]` extra admits the vLLM version (verl's declared pairings), newest first,
     with that extra.
With --verl V only V is tried (without its extra, plus the override, when its extra leaves the version out).
When none resolves, the refusal (Unpairable) says, from further resolutions, which is the newest vLLM that
resolves with that verl and which is the newest verl that resolves with the requested vLLM.

Every question goes through a resolver (assist/resolutions.Resolver: cached by its exact inputs).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from imagematrix.assist.resolutions import Request, Resolution
from imagematrix.knowledge import verl as verl_meta
from imagematrix.model import fields
from imagematrix.model.errors import InputError
from imagematrix.tools import pypi

# How many vLLM releases the refusal's search for "the newest vLLM that resolves with this verl" tries at most.
MAX_VLLM_TRIES = 30
SEARCH_JOBS = 4


class Index(Protocol):
    """What a proposal reads from the package index."""

    def versions(self, package: str) -> list[Version]: ...  # released versions with a wheel, newest first

    def requires_python(self, package: str, version: str) -> str | None: ...  # "" undeclared, None no wheel

    def vllm_range(self, verl: str) -> SpecifierSet | None: ...  # verl's `[vllm]` extra (None: no such extra)

    def vllm_extra_includes(self, verl: str) -> tuple[str, ...]: ...  # verl's extras that [vllm] installs


class LiveIndex:
    """The index as add-row reads it (tools/pypi, verl's wheel METADATA), each package's page read once."""

    def __init__(self):
        self._versions: dict[str, list[Version]] = {}
        self._lock = threading.Lock()

    def versions(self, package: str) -> list[Version]:
        with self._lock:
            if package not in self._versions:
                self._versions[package] = pypi.versions(package)
            return self._versions[package]

    def requires_python(self, package: str, version: str) -> str | None:
        return pypi.requires_python(package, version)

    def vllm_range(self, verl: str) -> SpecifierSet | None:
        return verl_meta.vllm_range(verl)

    def vllm_extra_includes(self, verl: str) -> tuple[str, ...]:
        return verl_meta.vllm_extra_includes(verl)


def fits(required: str, python: str) -> bool:
    """Whether Python `python` is within a release's Requires-Python ("" admits all); a declaration that is no
    version specifier admits none (that release is not tried)."""
    try:
        return not required or Version(python) in SpecifierSet(required)
    except InvalidSpecifier:
        return False


@dataclass(frozen=True)
class Pairing:
    """verl V with vLLM X, and how: with verl's `[vllm]` extra, or without it (overridden) when that extra's
    declared range leaves X out."""

    verl: str
    vllm: str
    declared: str | None  # the vLLM range of verl's [vllm] extra; None when verl has no such extra
    core: tuple[str, ...] = ()  # verl's extras that its [vllm] extra installs (kept by name when overridden)

    @property
    def overridden(self) -> bool:
        return self.declared is not None and not SpecifierSet(self.declared).contains(self.vllm, prereleases=True)

    def request(self, python: str, constraints: Iterable[str] = ()) -> Request:
        """As resolve.inputs writes a row's: when the pairing leaves verl's range, verl without [vllm] but with the
        extras [vllm] installs besides its pins (verl_extras), plus a vllm override; else verl[vllm]."""
        constraints = "".join(f"{c}\n" for c in constraints)
        verl = verl_meta.requirement(self.verl, self.overridden, self.verl_extras)
        if self.overridden:
            return Request(f"{verl}\nvllm=={self.vllm}\n", python, constraints, f"vllm=={self.vllm}\n")
        return Request(f"{verl}\nvllm=={self.vllm}\n", python, constraints)

    @property
    def verl_extras(self) -> tuple[str, ...]:
        """The row's `verl_extras`: what [vllm] would have installed besides its pins, when it is left out."""
        return self.core if self.overridden else ()

    def label(self) -> str:
        """Plain text (no brackets: error messages are printed as console markup)."""
        how = f" without its vllm extra (which declares vllm{self.declared})" if self.overridden else ""
        return f"verl {self.verl}{how} with vLLM {self.vllm}"

    def override_reason(self) -> str:
        """The `overrides: {vllm: {reason}}` text (one line, no quotes: fields.REASON_RE)."""
        text = (f"verl {self.verl} declares vllm{self.declared} in its vllm extra; without that extra it resolves "
                f"with vLLM {self.vllm} (found by add-row, not a pairing verl declares: run the smoke tests)")
        text = re.sub(r"[\x00-\x1f\x7f\"'`$\\]", "", text)[:300]
        assert fields.REASON_RE.fullmatch(text), text
        return text


def pairing(index: Index, verl: str, vllm: str) -> Pairing:
    spec = index.vllm_range(verl)
    p = Pairing(verl=verl, vllm=vllm, declared=None if spec is None else str(spec))
    return Pairing(verl, vllm, p.declared, index.vllm_extra_includes(verl)) if p.overridden else p


def candidates(index: Index, vllm: str, verl: str | None = None) -> list[tuple[Pairing, str]]:
    """(pairing, why) in the order add-row tries them."""
    if verl is not None:
        p = pairing(index, verl, vllm)
        return [(p, f"given; its [vllm] extra declares vllm{p.declared}, which leaves out vLLM {vllm}, so it is "
                    f"installed without that extra (override)" if p.overridden else "given")]
    verls = index.versions("verl")
    if not verls:
        raise InputError("the index has no verl release with a wheel", where="add-row", fix="check the index URL")
    newest = pairing(index, str(verls[0]), vllm)
    # The newest verl first (issue 16): with its [vllm] extra when that admits the vLLM, else without it and an
    # override; then older verls whose extra declares the vLLM, newest first.
    if newest.overridden:
        why = (f"the newest verl; its [vllm] extra declares vllm{newest.declared}, which leaves out vLLM {vllm}, and "
               f"without that extra it resolves with vLLM {vllm} (override)")
    elif newest.declared is not None:
        why = f"the newest verl, whose [vllm] extra admits vLLM {vllm} ({newest.declared})"
    else:
        why = "the newest verl (it declares no [vllm] extra)"
    out = [(newest, why)]
    declaring = [q for q in (pairing(index, str(v), vllm) for v in verls[1:])
                 if q.declared is not None and not q.overridden]
    for q in declaring:
        out.append((q, f"newest verl whose [vllm] extra admits vLLM {vllm} ({q.declared}) among those that resolve "
                       f"with it; the newest, verl {newest.verl}, does not resolve with it"))
    return out


def shorten(text: str, width: int) -> str:
    """text on one line, at most `width` characters where it has to be shortened: cut at a word boundary, never
    inside a word, and marked with "…" (a first word longer than `width` is kept whole)."""
    words = text.split()
    line = " ".join(words)
    if len(line) <= width:
        return line
    kept = [words[0]]
    for word in words[1:]:
        if len(" ".join([*kept, word])) + 2 > width:  # room for " …"
            break
        kept.append(word)
    return line if len(kept) == len(words) else " ".join(kept) + " …"


def cause(stderr: str) -> str:
    """uv's explanation in one line, whole: its first 'Because ...' clause, else its first line."""
    text = " ".join(stderr.split())
    found = re.search(r"Because (.*?)(?:,? we can conclude|,? and because|$)", text, re.I)
    line = found.group(1) if found else (stderr.strip().splitlines() or ["(uv said nothing)"])[0]
    return " ".join(line.removeprefix("error: ").split())


def short_cause(stderr: str) -> str:
    """cause(), shortened to 240 characters at a word boundary."""
    return shorten(cause(stderr), 240)


def first_ok(items: list, check: Callable[[object], bool], jobs: int = SEARCH_JOBS):
    """The first item, in order, for which check is true (checked `jobs` at a time); None when none is."""
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for start in range(0, len(items), max(1, jobs)):
            chunk = items[start:start + jobs]
            for item, ok in zip(chunk, pool.map(check, chunk), strict=True):
                if ok:
                    return item
    return None


class Unpairable(InputError):
    """No verl tried resolves with the vLLM version; carries the nearest pairings that do resolve."""

    def __init__(self, vllm: str, python: str, tried: list[tuple[Pairing, Resolution]], reference_verl: str,
                 newest_vllm: Pairing | None, vllm_tries: int, newest_verl: Pairing | None, verl_tries: int):
        self.vllm, self.python, self.tried = vllm, python, tried
        self.reference_verl = reference_verl
        self.newest_vllm = newest_vllm.vllm if newest_vllm else None
        self.newest_verl = newest_verl.verl if newest_verl else None
        self.by_vllm, self.by_verl = newest_vllm, newest_verl  # the pairings found (None: none resolves)
        self.vllm_tries, self.verl_tries = vllm_tries, verl_tries
        self.causes = [(p.label(), cause(r.stderr)) for p, r in tried]  # whole (outdated --json shows them)
        blocks = []
        for i, (p, r) in enumerate(tried):
            blocks.append(f"{p.label()} on Python {python} cannot be installed{' either' if i else ''}:\n"
                          + "\n".join("    " + line for line in r.stderr.strip().splitlines()))
        super().__init__("\n".join(blocks), where="add-row", fix="; ".join(self.hints()))

    def hints(self) -> list[str]:
        """The two nearest pairings that resolve (or that none does), one sentence each, plain text."""
        out = []
        by_vllm, by_verl = self.by_vllm, self.by_verl
        if by_vllm:
            out.append(f"the newest vLLM that resolves with verl {self.reference_verl} is {by_vllm.vllm}"
                       + (" (without verl's vllm extra)" if by_vllm.overridden else "")
                       + f": add-row --vllm {by_vllm.vllm} --verl {self.reference_verl}")
        else:
            out.append(f"no vLLM resolves with verl {self.reference_verl}"
                       + (f" (the {self.vllm_tries} newest tried)" if self.vllm_tries else ""))
        if by_verl:
            out.append(f"the newest verl that resolves with vLLM {self.vllm} is {by_verl.verl}"
                       + (f" (without its vllm extra, which declares vllm{by_verl.declared})" if by_verl.overridden
                          else "")
                       + f": add-row --vllm {self.vllm} --verl {by_verl.verl}")
        else:
            out.append(f"no verl release resolves with vLLM {self.vllm}"
                       + (f" ({self.verl_tries} tried)" if self.verl_tries else ""))
        return out


def search(index: Index, resolver: Callable[[Request], Resolution], vllm: str, python: str,
           constraints_for: Callable[[str], list[str]], verl: str | None = None) -> tuple[Pairing, Resolution, str]:
    """(the pairing, its resolution, why this verl); raises Unpairable with the nearest working pairings."""
    tried: list[tuple[Pairing, Resolution]] = []
    for p, why in candidates(index, vllm, verl):
        resolution = resolver(p.request(python, constraints_for(vllm)))
        if resolution.ok:
            if tried:
                why += "; " + "; ".join(f"{q.label()} does not resolve ({short_cause(r.stderr)})" for q, r in tried)
            return p, resolution, why
        tried.append((p, resolution))
    reference = verl or str(index.versions("verl")[0])
    done = {p.verl for p, _ in tried}

    def resolves(p: Pairing) -> bool:
        return resolver(p.request(python, constraints_for(p.vllm))).ok

    def python_ok(version: str) -> bool:
        required = index.requires_python("vllm", version)
        return required is not None and fits(required, python)

    others = [pairing(index, reference, str(v)) for v in index.versions("vllm")
              if str(v) != vllm and python_ok(str(v))][:MAX_VLLM_TRIES]
    newest_vllm = first_ok(others, resolves)
    verls = [pairing(index, str(v), vllm) for v in index.versions("verl") if str(v) not in done]
    newest_verl = first_ok(verls, resolves)
    raise Unpairable(vllm, python, tried, reference, newest_vllm, len(others), newest_verl, len(verls) + len(done))
