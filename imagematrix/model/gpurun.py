"""A GPU run's record: what ran where, with which wheels, and each test's outcome (docs/gpu-runs/*.json).

Records are data: `build.py gpu-record` writes one from a run's raw results, `build.py docs` renders
docs/gpu-runs.md and the image table's GPU column from them. A record never says more than the run showed.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from imagematrix.model import datafile, paths, tags
from imagematrix.model.datafile import CONTROL_RE, Line, Short, check_line  # noqa: F401 (CONTROL_RE: gpu_record)
from imagematrix.model.errors import InputError, InputErrors
from imagematrix.model.markdown import text as md

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


def check_row(text: str) -> str:
    if not tags.TAG_RE.fullmatch(text):
        raise ValueError(f"{text!r} is not a row id")
    return text


NOTE_MAX = 2000  # characters of a record's note (gpu-record --note)
SHA256_HEX = r"^[0-9a-f]{64}$"  # pydantic's patterns are Rust regexes: $ is the end of the text
FIX = ("a record is written by `build.py gpu-record`: restore it from git (git checkout -- FILE) or remove it, "
       "then run `build.py docs`")


class TestResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=500), AfterValidator(check_line)]
    outcome: Literal["passed", "failed", "skipped", "error"]
    duration_s: float = Field(ge=0, allow_inf_nan=False)
    detail: Short = ""  # skip reason or the first line of the failure


class Wheels(BaseModel):
    """How the row's locked packages reached the GPU host."""

    model_config = ConfigDict(extra="forbid")

    source: Line  # e.g. "the row's lock, hash-checked, installed with --target over the host's packages"
    from_lock: int  # locked packages installed from the row's own wheels
    from_host_same_version: list[Short] = []  # locked packages the host already had at the locked version
    from_host_other_version: list[Short] = []  # "name version (locked X)": left to the host, which had another version
    absent: list[Short] = []  # locked packages the host lacked and that were not carried
    omitted: list[Short] = []  # locked packages deliberately left out of the carried wheels


class ImageRef(BaseModel):
    """Image mode: which image ran (build.py export's manifest, carried to the GPU host and unpacked there)."""
    model_config = ConfigDict(extra="forbid")

    ref: str = Field(max_length=512, pattern=r"^[A-Za-z0-9._:/@-]+$")  # Rust regex: $ is the end of the text
    manifest_digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")  # as the registry served it at export
    runner: Short = ""  # how it ran: imagerun's mount/namespace set-up


class GpuRun(BaseModel):
    model_config = ConfigDict(extra="forbid")

    date: Annotated[str, AfterValidator(check_date)]  # YYYY-MM-DD
    row: Annotated[str, AfterValidator(check_row)]
    lock_sha256: str = Field(pattern=SHA256_HEX)  # the lock file as it was when the run installed its wheels
    # lockfile.pins_digest of that lock: what it installs, whatever its header says ("" in the oldest records)
    lock_pins_sha256: str = Field(default="", pattern=r"^([0-9a-f]{64})?$")
    mode: Literal["host", "image"]
    gpu: Short
    gpus: int = Field(ge=0)
    capability: Short
    driver: Short
    python: Short
    torch: Short
    torch_cuda: Short
    versions: dict[Short, Short | None]
    wheels: Wheels | None = None
    tests: list[TestResult]
    numbers: dict[str, object] = {}  # key figures: training step times and metrics, generated tokens (NUMBERS)
    note: Annotated[str, Field(max_length=NOTE_MAX), AfterValidator(check_line)] = ""
    image: ImageRef | None = None  # image mode: the image's digest (host mode runs wheels, not an image)

    @field_validator("numbers")
    @classmethod
    def _numbers_have_their_shape(cls, value: dict[str, object]) -> dict[str, object]:
        for key, item in value.items():
            check_numbers(key, item)
        return value  # as it was: checked, not converted

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


# The shapes of a record's numbers (what stages/gpu_record.numbers makes of verl_train.json and pytest.log); each
# is checked strictly (no conversion) and the values kept as they are. A value is a float, an int or null.
Value = float | None
Steps = dict[Short, dict[Short, Value]]  # step -> metric -> value, or metric -> step -> value


class VerlTrain(BaseModel):
    model_config = ConfigDict(extra="forbid")

    passed: bool | None = None
    wall_s: Value = None
    attn_implementation: Short | None = None
    metrics: Steps | None = None


TOKEN_KEY_RE = re.compile(r"vllm_[a-z0-9_]{1,60}_token_ids\Z")
NUMBERS = {"verl_train": TypeAdapter(VerlTrain), "verl_weight_sync": TypeAdapter(Steps),
           "token_ids": TypeAdapter(list[list[int]])}


def check_numbers(key: str, value: object) -> None:
    """ValueError (one line) unless `value` has the shape its `key` promises."""
    shape = "token_ids" if TOKEN_KEY_RE.fullmatch(key) else key if key in NUMBERS and key != "token_ids" else None
    if shape is None:
        raise ValueError(f"unknown key {key!r} (known: verl_train, verl_weight_sync, vllm_<label>_token_ids)")
    try:
        NUMBERS[shape].validate_python(value, strict=True)
    except ValidationError as exc:
        raise ValueError(f"{key}: {datafile.describe(exc)}") from None


def load(path: Path) -> GpuRun:
    """One record; anything but a record (not JSON, not UTF-8, too large or deep, of the wrong shape) is an
    InputError naming the file."""
    fix = FIX.replace("FILE", str(path))
    data = datafile.load_json(path, fix=fix)
    try:
        return GpuRun.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"not a GPU run record: {datafile.describe(exc)}", where=str(path), fix=fix) from None


def load_named(folder: Path = RUNS) -> list[tuple[str, GpuRun]]:
    """(file name, record) of every record in folder, oldest first (by date, then file name); every bad record is
    reported at once (InputErrors)."""
    if not folder.is_dir():
        return []
    runs, errors = [], []
    for path in sorted(folder.glob("*.json")):
        try:
            runs.append((path.name, load(path)))
        except InputError as exc:
            errors.append(exc)
    if errors:
        raise errors[0] if len(errors) == 1 else InputErrors(errors)
    return sorted(runs, key=lambda pair: (pair[1].date, pair[0]))


def load_all(folder: Path = RUNS) -> list[GpuRun]:
    """Every record, oldest first (by date, then file name)."""
    return [run for _, run in load_named(folder)]


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
    gpu = md(newest.gpu.removeprefix("NVIDIA "))  # a table cell of the generated docs
    same = current_pins is not None and newest.lock_pins_sha256 == current_pins
    wheels = (", same wheels" if same else ", wheels of an earlier lock") if newest.mode == "host" and newest.wheels else ""
    if newest.image is not None:
        digest = newest.image.manifest_digest
        wheels = f", image {digest[:19]}…" + ("" if served is None else " (the one the registry serves today)"
                                                if served == digest else " (not the one the registry serves today)")
    return (f"GPU suite {'passed' if _passed(outcomes) else 'FAILED'} on {gpu}, {newest.mode} mode{wheels}, "
            f"{newest.date} ({_counts(outcomes)})")
