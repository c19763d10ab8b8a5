"""The index as one `outdated` run reads it: every release of each watched package (upload time, Requires-Python)
and the vLLM range of each verl's `[vllm]` extra, in a Snapshot saved with its date under
<cache>/outdated/index.json, so that `--offline` reads the same answers back and says how old they are.

Only fetch() and save()/load() touch the network or the disk; the rest is data.
"""

from __future__ import annotations

import datetime
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from imagematrix.knowledge import verl as verl_meta
from imagematrix.model import paths, secrets
from imagematrix.model.errors import RuntimeFailure
from imagematrix.tools import pypi, pypi_releases
from imagematrix.tools.pypi_releases import Release

# The packages whose releases are watched, in the order they are shown.
PACKAGES = ("verl", "vllm", "torch", "transformers", "tensordict", "flash-attn")
SNAPSHOT_FORMAT = 2  # 2: vllm_includes (the extras verl's [vllm] installs), which add-row needs


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

    def age_s(self, now: datetime.datetime) -> float:
        return max(0.0, (now - datetime.datetime.fromisoformat(self.fetched)).total_seconds())

    def to_json(self) -> dict:
        return {"format": SNAPSHOT_FORMAT, "fetched": self.fetched, "index": self.index,
                "releases": {p: [r.to_json() for r in rs] for p, rs in self.releases.items()},
                "vllm_ranges": self.vllm_ranges, "vllm_includes": self.vllm_includes, "notes": self.notes}

    @classmethod
    def from_json(cls, data: dict) -> Snapshot:
        if data.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"snapshot format {data.get('format')!r}, expected {SNAPSHOT_FORMAT}")
        datetime.datetime.fromisoformat(data["fetched"])
        return cls(fetched=data["fetched"], index=data["index"],
                   releases={p: [Release.from_json(r) for r in rs] for p, rs in data["releases"].items()},
                   vllm_ranges=dict(data["vllm_ranges"]), vllm_includes=dict(data["vllm_includes"]),
                   notes=[str(n) for n in data.get("notes", [])])


def _range_of(verl: str) -> str | None:
    try:
        spec = verl_meta.vllm_range(verl)
    except (RuntimeFailure, InvalidSpecifier):
        return None  # an old wheel without readable metadata: treated as declaring no [vllm] extra
    return None if spec is None else str(spec)


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
    return Snapshot(fetched=(now or utcnow()).isoformat(timespec="seconds"),
                    index=secrets.redact_url(pypi.index_url()), releases=found, vllm_ranges=ranges,
                    vllm_includes={v: list(i) for v, i in includes.items() if i})


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
