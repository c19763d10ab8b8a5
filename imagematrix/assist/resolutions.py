"""uv's answers to proposal questions ("do these requirements resolve, and to what?"), cached on disk keyed by the
exact inputs, so that a whole `outdated` run, which asks the same questions many times, stays fast.

A cached answer is a verdict: a resolution, or uv's "no solution" with its explanation. A failure to reach the
index is never cached. Answers are dated; online, one older than max_age_s is asked again (new releases of the
dependencies change answers); offline (`outdated --offline`), any cached answer is used and a miss is a NotCached.
These answers pick a proposal's pins only: locking a row always resolves again over the network.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path

from imagematrix.model import paths, secrets
from imagematrix.model.errors import RuntimeFailure
from imagematrix.tools import pypi, uv

CACHE_FORMAT = 1
DEFAULT_MAX_AGE_S = 24 * 3600


def cache_root() -> Path:
    return paths.cache_dir() / "outdated" / "resolutions"


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


@dataclass(frozen=True)
class Request:
    """What uv is asked: requirements, constraints and overrides (requirements-file text) for a Python."""

    requirements: str
    python: str
    constraints: str = ""
    overrides: str = ""

    def key(self, index: str) -> str:
        payload = json.dumps({"format": CACHE_FORMAT, "platform": uv.PLATFORM, "index": index, "python": self.python,
                              "requirements": self.requirements, "constraints": self.constraints,
                              "overrides": self.overrides}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class Resolution:
    ok: bool
    stdout: str  # uv's requirements output when ok
    stderr: str  # uv's explanation when not (index credentials redacted)
    date: str  # when uv answered (ISO 8601, UTC)
    cached: bool = False


class NotCached(RuntimeFailure):
    """Offline, and this question was never answered online."""


def is_verdict(returncode: int, stderr: str) -> bool:
    """Whether uv's answer says something about the requirements (not about the network or uv itself)."""
    return returncode == 0 or "No solution found" in stderr or "unsatisfiable" in stderr \
        or "requires-python" in stderr.lower()


class Resolver:
    """Callable: Request -> Resolution. Thread-safe; counts what it asked uv and what came from the cache."""

    def __init__(self, *, offline: bool = False, max_age_s: float = DEFAULT_MAX_AGE_S, root: Path | None = None,
                 index: str | None = None):
        self.offline = offline
        self.max_age_s = max_age_s
        self.root = root or cache_root()
        self.index = index or pypi.index_url()
        self.asked = 0
        self.from_cache = 0
        self._lock = threading.Lock()

    def _path(self, request: Request) -> Path:
        key = request.key(self.index)
        return self.root / key[:2] / f"{key}.json"

    def cached(self, request: Request) -> Resolution | None:
        try:
            data = json.loads(self._path(request).read_text())
            date = datetime.datetime.fromisoformat(data["date"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not self.offline and (now() - date).total_seconds() > self.max_age_s:
            return None
        return Resolution(ok=bool(data["ok"]), stdout=data["stdout"], stderr=data["stderr"], date=data["date"],
                          cached=True)

    def __call__(self, request: Request) -> Resolution:
        hit = self.cached(request)
        if hit is not None:
            with self._lock:
                self.from_cache += 1
            return hit
        if self.offline:
            raise NotCached(f"offline, and uv was never asked about {request.requirements.strip().replace(chr(10), ' + ')} "
                            f"on Python {request.python}")
        proc = uv.compile_requirements(request.requirements, request.python, constraints=request.constraints,
                                       overrides=request.overrides)
        with self._lock:
            self.asked += 1
        stderr = secrets.redact_text(proc.stderr.strip())
        if not is_verdict(proc.returncode, stderr):
            raise RuntimeFailure("uv pip compile failed:\n" + "\n".join("    " + line for line in stderr.splitlines()))
        answer = Resolution(ok=proc.returncode == 0, stdout=proc.stdout if proc.returncode == 0 else "", stderr=stderr,
                            date=now().isoformat(timespec="seconds"))
        record = {"date": answer.date, "ok": answer.ok, "stdout": answer.stdout, "stderr": answer.stderr,
                  "python": request.python, "requirements": request.requirements,
                  "constraints": request.constraints, "overrides": request.overrides}
        paths.write_atomic(self._path(request), json.dumps(record, indent=1))
        return answer
