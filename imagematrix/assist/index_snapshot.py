"""The index as one `outdated` run reads it: every release of each watched package (upload time, Requires-Python),
the vLLM range of each verl's `[vllm]` extra and the Requires-Dist the rules read (each verl's, and those of the
other pins a proposal was checked with), in a Snapshot saved with its date under <cache>/outdated/index.json, so
that `--offline` reads the same answers back and says how old they are.

Only fetch(), save()/load() and a live Answers (online: a fact the snapshot lacks is read and recorded) touch the
network or the disk; the rest is data.
"""

from __future__ import annotations

import datetime
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from imagematrix.knowledge import requires
from imagematrix.knowledge import verl as verl_meta
from imagematrix.model import paths, secrets
from imagematrix.model.errors import RuntimeFailure
from imagematrix.tools import pypi, pypi_releases
from imagematrix.tools.pypi_releases import Release

# The packages whose releases are watched, in the order they are shown.
PACKAGES = ("verl", "vllm", "torch", "transformers", "tensordict", "flash-attn")
SNAPSHOT_FORMAT = 3  # 2: vllm_includes (the extras verl's [vllm] installs), which add-row needs; 3: the rules' facts
READABLE_FORMATS = (2, 3)  # a format-2 snapshot has no facts: offline, its proposals cannot be checked (and say so)


def fact_key(package: str, version: str) -> str:
    return f"{canonicalize_name(package)}=={version}"


def cache_path() -> Path:
    return paths.cache_dir() / "outdated" / "index.json"


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


@dataclass
class Snapshot:
    """The index as one run read it; serves addrow.propose as its pairing.Index."""

    fetched: str  # ISO 8601, UTC
    index: str  # the index URL, credentials redacted
    releases: dict[str, list[Release]]  # package -> releases, newest first
    vllm_ranges: dict[str, str | None]  # verl version -> the vLLM range of its [vllm] extra (None: no such extra)
    vllm_includes: dict[str, list[str]] = field(default_factory=dict)  # verl version -> extras [vllm] installs
    notes: list[str] = field(default_factory=list)  # the releases left out and why (a malformed Requires-Python)
    # what the rules read, by fact_key: Requires-Dist lines, and the Requires-Python of packages not watched (extras)
    requires_dist: dict[str, list[str]] = field(default_factory=dict)
    other_python: dict[str, str | None] = field(default_factory=dict)

    def __post_init__(self):
        """Releases whose Requires-Python is no version specifier are left out, each with a note: one malformed
        release on the index must not stop every comparison that reads it."""
        for package, found in self.releases.items():
            kept = []
            for release in found:
                try:
                    SpecifierSet(release.requires_python or "")
                except InvalidSpecifier:
                    self.notes.append(f"{package} {release.version} skipped: the index declares Requires-Python "
                                      f"{release.requires_python!r}, which is not a version specifier")
                    continue
                kept.append(release)
            self.releases[package] = kept

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

    def vllm_extra_includes(self, verl: str) -> tuple[str, ...]:
        return tuple(self.vllm_includes.get(verl, ()))

    def answers(self, live: bool) -> Answers:
        """The snapshot as the rules' source of facts (knowledge.requires.answered_by)."""
        return Answers(self, live)

    def age_s(self, now: datetime.datetime) -> float:
        return max(0.0, (now - datetime.datetime.fromisoformat(self.fetched)).total_seconds())

    def to_json(self) -> dict:
        return {"format": SNAPSHOT_FORMAT, "fetched": self.fetched, "index": self.index,
                "releases": {p: [r.to_json() for r in rs] for p, rs in self.releases.items()},
                "vllm_ranges": self.vllm_ranges, "vllm_includes": self.vllm_includes, "notes": self.notes,
                "requires_dist": self.requires_dist, "other_python": self.other_python}

    @classmethod
    def from_json(cls, data: dict) -> Snapshot:
        if data.get("format") not in READABLE_FORMATS:
            raise ValueError(f"snapshot format {data.get('format')!r}, expected one of {READABLE_FORMATS}")
        datetime.datetime.fromisoformat(data["fetched"])
        return cls(fetched=data["fetched"], index=data["index"],
                   releases={p: [Release.from_json(r) for r in rs] for p, rs in data["releases"].items()},
                   vllm_ranges=dict(data["vllm_ranges"]), vllm_includes=dict(data["vllm_includes"]),
                   notes=[str(n) for n in data.get("notes", [])],
                   requires_dist={str(k): [str(line) for line in v] for k, v in data.get("requires_dist", {}).items()},
                   other_python={str(k): None if v is None else str(v) for k, v in data.get("other_python", {}).items()})


class Answers:
    """What the rules read about a release (knowledge.requires.Answers), from the snapshot: Requires-Python of the
    watched packages from their releases, the rest from what it recorded. Live (online), a fact it lacks is read from
    the index and recorded in it, to be saved with it; offline, that fact is a RuntimeFailure, which the rule that
    needs it reports as not checked."""

    def __init__(self, snapshot: Snapshot, live: bool):
        self.snapshot, self.live = snapshot, live
        self._lock = threading.Lock()

    def _missing(self, what: str) -> RuntimeFailure:
        return RuntimeFailure(f"{what} is not in the index snapshot (run `build.py outdated` without --offline)")

    def requires_dist(self, package: str, version: str) -> tuple[str, ...]:
        key = fact_key(package, version)
        with self._lock:
            known = self.snapshot.requires_dist.get(key)
        if known is not None:
            return tuple(known)
        if not self.live:
            raise self._missing(f"the Requires-Dist of {package} {version}")
        lines = requires.read_requires_dist(package, version)
        with self._lock:
            self.snapshot.requires_dist[key] = list(lines)
        return lines

    def requires_python(self, package: str, version: str) -> str | None:
        if canonicalize_name(package) in {canonicalize_name(p) for p in PACKAGES}:
            watched = next(p for p in PACKAGES if canonicalize_name(p) == canonicalize_name(package))
            return self.snapshot.requires_python(watched, version)
        key = fact_key(package, version)
        with self._lock:
            if key in self.snapshot.other_python:
                return self.snapshot.other_python[key]
        if not self.live:
            raise self._missing(f"the Requires-Python of {package} {version}")
        value = pypi.requires_python(package, version)
        with self._lock:
            self.snapshot.other_python[key] = value
        return value


def _range_of(verl: str) -> str | None:
    try:
        spec = verl_meta.vllm_range(verl)
    except (RuntimeFailure, InvalidSpecifier):
        return None  # an old wheel without readable metadata: treated as declaring no [vllm] extra
    return None if spec is None else str(spec)


def _requires_of(verl: str) -> list[str] | None:
    try:
        return list(requires.read_requires_dist("verl", verl))
    except RuntimeFailure:
        return None  # not recorded: online, a rule that needs it reads it again


def _includes_of(verl: str) -> tuple[str, ...]:
    try:
        return verl_meta.vllm_extra_includes(verl)
    except RuntimeFailure:
        return ()


def fetch(now: datetime.datetime | None = None, jobs: int = 8) -> Snapshot:
    """Read the index: each package's page once, then each verl wheel's METADATA (cached on disk by tools/pypi)."""
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        found = dict(zip(PACKAGES, pool.map(pypi_releases.releases, PACKAGES), strict=True))
        verls = [r.version for r in found["verl"] if r.wheel]
        ranges = dict(zip(verls, pool.map(_range_of, verls), strict=True))
        includes = dict(zip(verls, pool.map(_includes_of, verls), strict=True))
        declared = dict(zip(verls, pool.map(_requires_of, verls), strict=True))
    return Snapshot(fetched=(now or utcnow()).isoformat(timespec="seconds"),
                    index=secrets.redact_url(pypi.index_url()), releases=found, vllm_ranges=ranges,
                    vllm_includes={v: list(i) for v, i in includes.items() if i},
                    requires_dist={fact_key("verl", v): lines for v, lines in declared.items() if lines is not None})


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
