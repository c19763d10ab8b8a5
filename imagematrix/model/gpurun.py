"""A GPU run's record: what ran where, with which wheels, and each test's outcome (docs/gpu-runs/*.json).

Records are data: `build.py gpu-record` writes one from a run's raw results, `build.py docs` renders
docs/gpu-runs.md and the image table's GPU column from them. A record never says more than the run showed.
"""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from imagematrix.model import paths

RUNS = paths.ROOT / "docs" / "gpu-runs"
DATE_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")  # a record's date: it names the record's file


def check_date(text: str) -> str:
    """text when it is a calendar day written YYYY-MM-DD (the whole string), else ValueError saying why."""
    if not DATE_RE.fullmatch(text):
        raise ValueError(f"{text!r} is not a date written YYYY-MM-DD")
    try:
        datetime.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is no calendar day (YYYY-MM-DD)") from None
    return text


class TestResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    outcome: Literal["passed", "failed", "skipped", "error"]
    duration_s: float
    detail: str = ""  # skip reason or the first line of the failure


class Wheels(BaseModel):
    """How the row's locked packages reached the GPU host."""

    model_config = ConfigDict(extra="forbid")

    source: str  # e.g. "the row's lock, hash-checked, installed with --target over the host's packages"
    from_lock: int  # locked packages installed from the row's own wheels
    from_host_same_version: list[str] = []  # locked packages the host already had at the locked version
    from_host_other_version: list[str] = []  # "name version (locked X)": left to the host, which had another version
    absent: list[str] = []  # locked packages the host lacked and that were not carried
    omitted: list[str] = []  # locked packages deliberately left out of the carried wheels


class ImageRef(BaseModel):
    """Image mode: which image ran (build.py export's manifest, carried to the GPU host and unpacked there)."""
    model_config = ConfigDict(extra="forbid")

    ref: str = Field(max_length=512, pattern=r"^[A-Za-z0-9._:/@-]+$")  # Rust regex: $ is the end of the text
    manifest_digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")  # as the registry served it at export
    runner: str = Field(default="", max_length=300)  # how it ran: imagerun's mount/namespace set-up


class GpuRun(BaseModel):
    model_config = ConfigDict(extra="forbid")

    date: str  # YYYY-MM-DD
    row: str
    lock_sha256: str  # the lock file as it was when the run installed its wheels
    lock_pins_sha256: str = ""  # lockfile.pins_digest of that lock: what it installs, whatever its header says
    mode: Literal["host", "image"]
    gpu: str
    gpus: int
    capability: str
    driver: str
    python: str
    torch: str
    torch_cuda: str
    versions: dict[str, str | None]
    wheels: Wheels | None = None
    tests: list[TestResult]
    numbers: dict[str, object] = {}  # key figures: training step times and metrics, generated tokens
    note: str = ""
    image: ImageRef | None = None  # image mode: the image's digest (host mode runs wheels, not an image)

    @model_validator(mode="after")
    def _image_mode_names_its_image(self):
        if (self.mode == "image") != (self.image is not None):
            raise ValueError("an image-mode record names its image (image.manifest_digest); a host-mode one does not")
        return self

    @property
    def passed(self) -> bool:
        return _passed([t.outcome for t in self.tests])

    def counts(self) -> str:
        """e.g. "7 passed, 1 failed, 4 skipped"."""
        return _counts([t.outcome for t in self.tests])

    def file_name(self, seq: int = 1) -> str:
        return f"{self.date}-{self.row}-{seq}.json"


def load_all(folder: Path = RUNS) -> list[GpuRun]:
    """Every record, oldest first (by date, then file name)."""
    if not folder.is_dir():
        return []
    runs = [(p.name, GpuRun.model_validate(json.loads(p.read_text()))) for p in sorted(folder.glob("*.json"))]
    return [run for _, run in sorted(runs, key=lambda pair: (pair[1].date, pair[0]))]


def _passed(outcomes: list[str]) -> bool:
    """Something passed and nothing failed (skips alone are no pass)."""
    return "passed" in outcomes and all(o in ("passed", "skipped") for o in outcomes)


def _counts(outcomes: list[str]) -> str:
    return ", ".join(f"{outcomes.count(o)} {o}" for o in ("passed", "failed", "error", "skipped") if o in outcomes)


def by_row(runs: list[GpuRun]) -> dict[str, list[GpuRun]]:
    out: dict[str, list[GpuRun]] = {}
    for run in runs:
        out.setdefault(run.row, []).append(run)
    return out


def latest_results(runs: list[GpuRun]) -> dict[str, tuple[TestResult, GpuRun]]:
    """Each test's newest result over a row's runs (oldest first): a rerun of one test replaces only that test."""
    latest: dict[str, tuple[TestResult, GpuRun]] = {}
    for run in runs:
        for test in run.tests:
            latest[test.name] = (test, run)
    return latest


def summary(runs: list[GpuRun], current_pins: str | None = None, served: str | None = None) -> str:
    """The image table's GPU cell for one row: never more than the records say. current_pins: the pins digest of
    the row's lock today; "same wheels" only while the newest run installed exactly those. served: the manifest
    digest the registry serves for the row today (None: not asked); an image-mode run says whether it ran that one."""
    if not runs:
        return "never run on a GPU"
    latest = latest_results(runs)
    outcomes = [test.outcome for test, _ in latest.values()]
    newest = runs[-1]
    gpu = newest.gpu.removeprefix("NVIDIA ")
    same = current_pins is not None and newest.lock_pins_sha256 == current_pins
    wheels = (", same wheels" if same else ", wheels of an earlier lock") if newest.mode == "host" and newest.wheels else ""
    if newest.image is not None:
        digest = newest.image.manifest_digest
        wheels = f", image {digest[:19]}…" + ("" if served is None else " (the one the registry serves today)"
                                                if served == digest else " (not the one the registry serves today)")
    return (f"GPU suite {'passed' if _passed(outcomes) else 'FAILED'} on {gpu}, {newest.mode} mode{wheels}, "
            f"{newest.date} ({_counts(outcomes)})")
