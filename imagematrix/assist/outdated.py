"""outdated: the releases of the pinned packages newer than the newest version the matrix covers, and for each
new vLLM (and each new verl) release the row add-row would propose for it, or why none can be made.

The index's answers are read once per run into an index_snapshot.Snapshot (saved with its date; `--offline` reads
it back), and uv's answers come from <cache>/outdated/resolutions/ (assist/resolutions.py), so an offline run asks
nothing of the network. Proposals are addrow.propose's, over the snapshot: the same pairing search, the same
constraints. A proposal, and each nearest pairing a refusal names, is then checked like a matrix row: every rule of
knowledge/rules.yaml over the row add-row would write and uv's resolution of it, with the facts the rules read
(Requires-Dist, Requires-Python) taken from the snapshot. Only a pairing that passes every fail rule is offered; one
that does not is listed as "not offered" with the rules that refuse it. Imports are not checked: no image is built.
Everything here is a function over data (tests feed it recorded answers).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from packaging.version import Version

from imagematrix import rules
from imagematrix.assist import addrow, pairing, resolutions
from imagematrix.assist.index_snapshot import PACKAGES, Snapshot
from imagematrix.knowledge import requires
from imagematrix.model import fields, tags
from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.model.matrix import Row
from imagematrix.tools.pypi_releases import Release

FIELD_OF = {package: name for name, package in fields.PIN_PACKAGES.items()}  # distribution -> row field


# --- what is new -----------------------------------------------------------------------------------------------


def covered(rows: list[Row] | tuple[Row, ...]) -> dict[str, str | None]:
    """package -> the newest version any row pins (None when no row pins it)."""
    out: dict[str, str | None] = {}
    for package in PACKAGES:
        pinned = [getattr(r, FIELD_OF[package]) for r in rows if getattr(r, FIELD_OF[package])]
        out[package] = str(max(pinned, key=Version)) if pinned else None
    return out


def newer(releases: list[Release], than: str | None, *, since: str | None = None,
          limit: int | None = None) -> list[Release]:
    """The releases newer than `than` (or, with since, at or after `since`), newest first, the newest `limit`.
    Nothing when than and since are both None: a package no row pins has no 'newest covered' to be newer than."""
    if since is not None:
        picked = [r for r in releases if Version(r.version) >= Version(since)]
    elif than is not None:
        picked = [r for r in releases if Version(r.version) > Version(than)]
    else:
        picked = []
    picked.sort(key=lambda r: Version(r.version), reverse=True)
    return picked[:limit] if limit is not None else picked


# --- what is checked beyond resolution --------------------------------------------------------------------------

# What no check here covers: a proposal is resolved and checked against the rules, never installed or imported.
NOT_CHECKED = "imports and GPU runs (no image is built)"
NOT_CHECKED_WHY = "no image is built: the smoke tests import and run it once the row is added and built"


@dataclass(frozen=True)
class Check:
    """One rule's result over a proposed row. status: passed, n/a, warned (a warn rule), failed, or unchecked (a
    fail rule whose facts could not be read or are unverified: it refuses as a failure does)."""

    rule: str
    status: str
    message: str

    @property
    def refuses(self) -> bool:
        return self.status in ("failed", "unchecked")

    def headline(self) -> str:
        """The message up to its symptom (rule messages read 'what: symptom')."""
        return self.message.split(": ", 1)[0]


@dataclass
class Vetting:
    """A pairing checked beyond uv's resolution: the rules over the row add-row would write (checks), or why no
    row could be proposed for it (error: then nothing was checked and it is not offered)."""

    checks: list[Check] = field(default_factory=list)
    error: str | None = None

    @property
    def refused(self) -> list[Check]:
        return [c for c in self.checks if c.refuses]

    @property
    def offered(self) -> bool:
        return self.error is None and bool(self.checks) and not self.refused

    def rules_with(self, status: str) -> list[str]:
        """The rules whose every result has this status (passed, n/a), or any result (warned), in rules.yaml order."""
        by_rule: dict[str, set[str]] = {}
        for c in self.checks:
            by_rule.setdefault(c.rule, set()).add(c.status)
        if status == "warned":
            return [rule for rule, seen in by_rule.items() if "warned" in seen]
        return [rule for rule, seen in by_rule.items() if seen == {status}]

    def words(self) -> str:
        """One line, plain text: why it is not offered, or what was checked and what was not."""
        if self.error is not None:
            return f"not offered: not checked, {self.error}"
        if self.refused:
            seen: dict[str, str] = {}
            for c in self.refused:
                how = " could not be checked" if c.status == "unchecked" else ""
                seen.setdefault(c.rule, f"rule {c.rule}{how} ({c.headline()})")
            return "not offered: " + "; ".join(seen.values())
        parts = [f"checked: uv resolution; rules passed: {', '.join(self.rules_with('passed'))}"]  # n/a: in to_json
        if self.rules_with("warned"):
            parts.append(f"warned: {', '.join(self.rules_with('warned'))}")
        return "; ".join(parts) + f"; not checked: {NOT_CHECKED}"

    def to_json(self) -> dict:
        return {"offered": self.offered, "words": self.words(), "error": self.error, "checked": "uv resolution, rules",
                "rules": [{"rule": c.rule, "status": c.status, "message": c.message} for c in self.checks],
                "not_checked": NOT_CHECKED, "not_checked_why": NOT_CHECKED_WHY}


def vet(proposal: addrow.Proposal) -> Vetting:
    """Every rule of knowledge/rules.yaml over the row add-row would write for the proposal, with uv's resolution
    (the facts the rules read come from the requires.answered_by in force: outdated's snapshot)."""
    ruleset = rules.load()
    severity = {spec.id: spec.severity for spec in ruleset.rules}
    checks = []
    for r in rules.evaluate(proposal.row(), proposal.resolution, ruleset=ruleset):
        status = "unchecked" if r.status == "warned" and severity.get(r.rule) == "fail" else r.status
        checks.append(Check(r.rule, status, r.message))
    return Vetting(checks)


def vet_pairing(p: pairing.Pairing, *, snapshot: Snapshot, resolver: Callable, python: str) -> Vetting:
    """A nearest pairing (found by resolution alone) proposed as add-row --vllm X --verl V would, then vetted."""
    try:
        return vet(addrow.propose(p.vllm, python, p.verl, index=snapshot, resolver=resolver))
    except InputError as exc:
        return Vetting(error=first_line(exc.message))
    except RuntimeFailure as exc:
        return Vetting(error=first_line(str(exc)))


# --- proposals -------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One new vLLM or verl release and the row add-row would propose for it, or why none."""

    package: str  # "vllm" or "verl"
    version: str
    uploaded: str | None = None
    in_matrix: bool = False  # a row already pins this version (nothing proposed)
    proposal: addrow.Proposal | None = None
    vetting: Vetting | None = None  # the proposal checked beyond resolution (offered only when it passes)
    row_id: str | None = None
    reason: str | None = None  # why no row can be proposed, or why the proposal is not offered
    hints: list[str] = field(default_factory=list)  # the nearest pairings that resolve, in words
    tried: list[tuple[str, str]] = field(default_factory=list)  # (pairing, uv's cause) of each pairing tried
    # "vllm": the newest vLLM that resolves with the newest (or given) verl; "verl": the newest verl that resolves
    # with this vLLM; each {"verl", "vllm", "override"} and its Vetting's JSON ("offered", "words", "rules"...), or
    # None when none resolves
    nearest: dict[str, dict | None] = field(default_factory=dict)

    @property
    def offered(self) -> bool:
        return self.proposal is not None and self.vetting is not None and self.vetting.offered

    @property
    def addable(self) -> bool:
        return self.offered and not self.in_matrix

    def to_json(self) -> dict:
        row = None
        if self.proposal is not None:
            row = {"id": self.row_id, "pins": self.proposal.pins, "extras": self.proposal.extras,
                   "overrides": {name: {"version": self.proposal.pins[name], "reason": reason}
                                 for name, reason in self.proposal.overrides.items()},
                   "why": self.proposal.why, **(self.vetting.to_json() if self.vetting else {"offered": False})}
        return {"package": self.package, "version": self.version, "uploaded": self.uploaded,
                "in_matrix": self.in_matrix, "row": row, "reason": self.reason,
                "tried": [{"pairing": label, "cause": cause} for label, cause in self.tried],
                "nearest": self.nearest, "hints": self.hints}


def _pairing_json(p: pairing.Pairing | None, vetting: Vetting | None = None) -> dict | None:
    if p is None:
        return None
    return {"verl": p.verl, "vllm": p.vllm, "override": p.overridden, **(vetting.to_json() if vetting else {})}


def vllm_for_verl(snapshot: Snapshot, verl: str, python: str) -> str | None:
    """The vLLM to try a new verl with first: the newest its [vllm] extra admits, else the newest for this Python
    (when that does not resolve, outcome() takes the newest vLLM that does)."""
    def python_ok(version: str) -> bool:
        required = snapshot.requires_python("vllm", version)
        return required is not None and pairing.fits(required, python)

    usable = [str(v) for v in snapshot.versions("vllm") if python_ok(str(v))]
    spec = snapshot.vllm_range(verl)
    admitted = [v for v in usable if spec is not None and spec.contains(v, prereleases=True)]
    return (admitted or usable or [None])[0]


def first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0]


def outcome(package: str, release: Release, *, snapshot: Snapshot, resolver: Callable, python: str,
            rows: tuple[Row, ...] | list[Row], answers: requires.Answers | None = None) -> Outcome:
    """The Outcome for one new release: add-row's proposal over the snapshot, checked against the rules, or the
    reason there is none. `answers`: the facts the rules read (default: the snapshot's, never the network)."""
    with requires.answered_by(answers or snapshot.answers(live=False)):
        return _outcome(package, release, snapshot=snapshot, resolver=resolver, python=python, rows=rows)


def _outcome(package: str, release: Release, *, snapshot: Snapshot, resolver: Callable, python: str,
             rows: tuple[Row, ...] | list[Row]) -> Outcome:
    result = Outcome(package=package, version=release.version, uploaded=release.uploaded)
    if any(Version(getattr(r, package)) == Version(release.version) for r in rows):
        result.in_matrix = True
        return result
    if package == "vllm":
        vllm, verl = release.version, None
    else:
        vllm, verl = vllm_for_verl(snapshot, release.version, python), release.version
        if vllm is None:
            result.reason = f"no vLLM release has a wheel for Python {python}"
            return result
    try:
        try:
            proposal = addrow.propose(vllm, python, verl, index=snapshot, resolver=resolver)
        except pairing.Unpairable as exc:
            if verl is None or exc.by_vllm is None:
                raise
            # a new verl: the newest vLLM that resolves with it (found by the refusal's own search)
            proposal = addrow.propose(exc.by_vllm.vllm, python, verl, index=snapshot, resolver=resolver)
    except pairing.Unpairable as exc:
        result.reason = f"no verl tried resolves with vLLM {exc.vllm} on Python {python}"
        result.tried = exc.causes
        result.hints = exc.hints()
        result.nearest = {}
        for i, (key, found) in enumerate((("vllm", exc.by_vllm), ("verl", exc.by_verl))):
            vetting = None if found is None else vet_pairing(found, snapshot=snapshot, resolver=resolver, python=python)
            result.nearest[key] = _pairing_json(found, vetting)
            if vetting is not None and not vetting.offered:
                result.hints[i] += f" ({vetting.words()})"
        return result
    except resolutions.NotCached:
        result.reason = "not in the cache: uv was never asked about it online (run `build.py outdated` without --offline)"
        return result
    except InputError as exc:
        result.reason = first_line(exc.message)
        return result
    except RuntimeFailure as exc:
        result.reason = f"failed: {first_line(str(exc))}"
        return result
    result.proposal = proposal
    try:
        result.vetting = vet(proposal)
    except InputError as exc:  # the rules file itself: nothing checked
        result.vetting = Vetting(error=first_line(exc.message))
    if not result.vetting.offered:
        result.reason = result.vetting.words()
    pins = proposal.pins
    result.row_id = tags.row_id(verl=pins["verl"], vllm=pins["vllm"], torch=pins["torch"], cuda=pins["cuda"],
                                python=pins["python"])
    result.in_matrix = result.row_id in {r.id for r in rows}
    return result


@dataclass
class Report:
    snapshot: Snapshot
    offline: bool
    python: str
    age_s: float
    covered: dict[str, str | None]
    newer: dict[str, list[Release]]
    outcomes: list[Outcome]
    asked: int = 0  # resolutions uv computed in this run
    from_cache: int = 0  # resolutions read from the answer cache

    @property
    def addable(self) -> list[Outcome]:
        """The outcomes with a row to add, each row once (a new verl's row may be a new vLLM's too)."""
        seen: set[str | None] = set()
        out = []
        for o in self.outcomes:
            if o.addable and o.row_id not in seen:
                seen.add(o.row_id)
                out.append(o)
        return out

    @property
    def exit_code(self) -> int:
        """0: no row can be added (the matrix is current, or no new release can be paired yet); 1: rows can be."""
        return 1 if self.addable else 0

    def to_json(self) -> dict:
        return {"index": self.snapshot.index, "fetched": self.snapshot.fetched, "age_s": round(self.age_s),
                "notes": self.snapshot.notes,
                "offline": self.offline, "python": self.python,
                "packages": {p: {"matrix": self.covered.get(p), "newer": [r.to_json() for r in self.newer.get(p, [])]}
                             for p in PACKAGES},
                "rows": [o.to_json() for o in self.outcomes],
                "addable": len(self.addable),
                "resolutions": {"asked": self.asked, "from_cache": self.from_cache},
                "exit": self.exit_code}


def build_report(rows: tuple[Row, ...] | list[Row], snapshot: Snapshot, resolver: Callable, *, python: str,
                 now: datetime.datetime, offline: bool = False, since_vllm: str | None = None,
                 limit: int | None = None, jobs: int = 4) -> Report:
    have = covered(rows)
    new = {p: newer(snapshot.releases.get(p, []), have[p], since=since_vllm if p == "vllm" else None, limit=limit)
           for p in PACKAGES}
    targets = [("vllm", r) for r in new["vllm"]] + [("verl", r) for r in new["verl"]]

    answers = snapshot.answers(live=not offline)  # online, a fact the snapshot lacks is read and recorded in it

    def one(target: tuple[str, Release]) -> Outcome:
        return outcome(target[0], target[1], snapshot=snapshot, resolver=resolver, python=python, rows=rows,
                       answers=answers)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        outcomes = list(pool.map(one, targets))
    return Report(snapshot=snapshot, offline=offline, python=python, age_s=snapshot.age_s(now), covered=have,
                  newer=new, outcomes=outcomes, asked=getattr(resolver, "asked", 0),
                  from_cache=getattr(resolver, "from_cache", 0))
