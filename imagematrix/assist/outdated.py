"""outdated: the releases of the pinned packages newer than the newest version the matrix covers, and for each
new vLLM (and each new verl) release the row add-row would propose for it, or why none can be made.

The index's answers (every release of each package, with its upload time and Requires-Python, and the vLLM range of
each verl's `[vllm]` extra) are read once per run into a Snapshot, saved with its date under
<cache>/outdated/index.json; `--offline` reads that file instead, and uv's answers from <cache>/outdated/resolutions/
(assist/resolutions.py), so an offline run asks nothing of the network. Proposals are addrow.propose's, over the
snapshot: the same pairing search, the same constraints.

Everything here except fetch() and save()/load() is a function over data (tests feed it recorded answers).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from imagematrix.assist import addrow, pairing, resolutions
from imagematrix.knowledge import verl as verl_meta
from imagematrix.model import fields, paths, secrets, tags
from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.model.matrix import Row
from imagematrix.tools import pypi, pypi_releases
from imagematrix.tools.pypi_releases import Release

# The packages whose releases are watched, in the order they are shown.
PACKAGES = ("verl", "vllm", "torch", "transformers", "tensordict", "flash-attn")
FIELD_OF = {package: name for name, package in fields.PIN_PACKAGES.items()}  # distribution -> row field
SNAPSHOT_FORMAT = 1


def cache_path() -> Path:
    return paths.cache_dir() / "outdated" / "index.json"


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


# --- the index's answers ---------------------------------------------------------------------------------------


@dataclass
class Snapshot:
    """The index as one run read it; serves addrow.propose as its pairing.Index."""

    fetched: str  # ISO 8601, UTC
    index: str  # the index URL, credentials redacted
    releases: dict[str, list[Release]]  # package -> releases, newest first
    vllm_ranges: dict[str, str | None]  # verl version -> the vLLM range of its [vllm] extra (None: no such extra)

    def versions(self, package: str) -> list[Version]:
        return [Version(r.version) for r in self.releases.get(package, []) if r.wheel]

    def requires_python(self, package: str, version: str) -> str | None:
        for r in self.releases.get(package, []):
            if r.wheel and Version(r.version) == Version(version):
                return r.requires_python or ""
        return None

    def vllm_range(self, verl: str) -> SpecifierSet | None:
        if verl not in self.vllm_ranges:
            raise RuntimeFailure(f"verl {verl}'s metadata was not read when the index was (run `outdated` online)")
        spec = self.vllm_ranges[verl]
        return None if spec is None else SpecifierSet(spec)

    def age_s(self, now: datetime.datetime) -> float:
        return max(0.0, (now - datetime.datetime.fromisoformat(self.fetched)).total_seconds())

    def to_json(self) -> dict:
        return {"format": SNAPSHOT_FORMAT, "fetched": self.fetched, "index": self.index,
                "releases": {p: [r.to_json() for r in rs] for p, rs in self.releases.items()},
                "vllm_ranges": self.vllm_ranges}

    @classmethod
    def from_json(cls, data: dict) -> Snapshot:
        if data.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"snapshot format {data.get('format')!r}, expected {SNAPSHOT_FORMAT}")
        datetime.datetime.fromisoformat(data["fetched"])
        return cls(fetched=data["fetched"], index=data["index"],
                   releases={p: [Release.from_json(r) for r in rs] for p, rs in data["releases"].items()},
                   vllm_ranges=dict(data["vllm_ranges"]))


def _range_of(verl: str) -> str | None:
    try:
        spec = verl_meta.vllm_range(verl)
    except (RuntimeFailure, InvalidSpecifier):
        return None  # an old wheel without readable metadata: treated as declaring no [vllm] extra
    return None if spec is None else str(spec)


def fetch(now: datetime.datetime | None = None, jobs: int = 8) -> Snapshot:
    """Read the index: each package's page once, then each verl wheel's METADATA (cached on disk by tools/pypi)."""
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        found = dict(zip(PACKAGES, pool.map(pypi_releases.releases, PACKAGES), strict=True))
        verls = [r.version for r in found["verl"] if r.wheel]
        ranges = dict(zip(verls, pool.map(_range_of, verls), strict=True))
    return Snapshot(fetched=(now or utcnow()).isoformat(timespec="seconds"),
                    index=secrets.redact_url(pypi.index_url()), releases=found, vllm_ranges=ranges)


def save(snapshot: Snapshot, path: Path | None = None) -> Path:
    path = path or cache_path()
    paths.write_atomic(path, json.dumps(snapshot.to_json(), indent=1))
    return path


def load(path: Path | None = None) -> Snapshot | None:
    """The saved snapshot; None when there is none (or it cannot be read: a later online run replaces it)."""
    try:
        return Snapshot.from_json(json.loads((path or cache_path()).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def age_text(seconds: float) -> str:
    """'42 s', '5 min', '3 h 12 min', '2 days 4 h'."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} day{'s' if days != 1 else ''}" + (f" {hours} h" if hours else "")


def cache_note(snapshot: Snapshot, now: datetime.datetime, offline: bool) -> str:
    when = datetime.datetime.fromisoformat(snapshot.fetched).strftime("%Y-%m-%d %H:%M UTC")
    if offline:
        return (f"offline: the index ({snapshot.index}) as read {when}, {age_text(snapshot.age_s(now))} ago; "
                f"run without --offline to read it again")
    return f"the index ({snapshot.index}) read {when}"


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


# --- proposals -------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One new vLLM or verl release and the row add-row would propose for it, or why none."""

    package: str  # "vllm" or "verl"
    version: str
    uploaded: str | None = None
    in_matrix: bool = False  # a row already pins this version (nothing proposed)
    proposal: addrow.Proposal | None = None
    row_id: str | None = None
    reason: str | None = None  # why no row can be proposed
    hints: list[str] = field(default_factory=list)  # the nearest pairings that resolve, in words
    tried: list[tuple[str, str]] = field(default_factory=list)  # (pairing, uv's cause) of each pairing tried
    # "vllm": the newest vLLM that resolves with the newest (or given) verl; "verl": the newest verl that resolves
    # with this vLLM; each {"verl", "vllm", "override"} or None when none does
    nearest: dict[str, dict | None] = field(default_factory=dict)

    @property
    def addable(self) -> bool:
        return self.proposal is not None and not self.in_matrix

    def to_json(self) -> dict:
        row = None
        if self.proposal is not None:
            row = {"id": self.row_id, "pins": self.proposal.pins, "extras": self.proposal.extras,
                   "overrides": {name: {"version": self.proposal.pins[name], "reason": reason}
                                 for name, reason in self.proposal.overrides.items()},
                   "why": self.proposal.why}
        return {"package": self.package, "version": self.version, "uploaded": self.uploaded,
                "in_matrix": self.in_matrix, "row": row, "reason": self.reason,
                "tried": [{"pairing": label, "cause": cause} for label, cause in self.tried],
                "nearest": self.nearest, "hints": self.hints}


def _pairing_json(p: pairing.Pairing | None) -> dict | None:
    return None if p is None else {"verl": p.verl, "vllm": p.vllm, "override": p.overridden}


def vllm_for_verl(snapshot: Snapshot, verl: str, python: str) -> str | None:
    """The vLLM to try a new verl with first: the newest its [vllm] extra admits, else the newest for this Python
    (when that does not resolve, outcome() takes the newest vLLM that does)."""
    def python_ok(version: str) -> bool:
        required = snapshot.requires_python("vllm", version)
        return required is not None and (not required or Version(python) in SpecifierSet(required))

    usable = [str(v) for v in snapshot.versions("vllm") if python_ok(str(v))]
    spec = snapshot.vllm_range(verl)
    admitted = [v for v in usable if spec is not None and spec.contains(v, prereleases=True)]
    return (admitted or usable or [None])[0]


def first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0]


def outcome(package: str, release: Release, *, snapshot: Snapshot, resolver: Callable, python: str,
            rows: tuple[Row, ...] | list[Row]) -> Outcome:
    """The Outcome for one new release: add-row's proposal over the snapshot, or the reason there is none."""
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
        result.nearest = {"vllm": _pairing_json(exc.by_vllm), "verl": _pairing_json(exc.by_verl)}
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

    def one(target: tuple[str, Release]) -> Outcome:
        return outcome(target[0], target[1], snapshot=snapshot, resolver=resolver, python=python, rows=rows)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        outcomes = list(pool.map(one, targets))
    return Report(snapshot=snapshot, offline=offline, python=python, age_s=snapshot.age_s(now), covered=have,
                  newer=new, outcomes=outcomes, asked=getattr(resolver, "asked", 0),
                  from_cache=getattr(resolver, "from_cache", 0))
