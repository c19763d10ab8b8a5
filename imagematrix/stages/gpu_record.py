"""GPU record stage: a run's raw results (imagematrix/suites/gpu/run_host.sh's OUT folder) -> docs/gpu-runs/<...>.json.

Read: junit.xml (each test's outcome and duration), gpu.csv (nvidia-smi), env.json (versions as the suite's Python
imports them), verl_train.json (the training smoke's numbers), host-versions.json (which locked packages the host
already had; written when the row's wheels were layered over a host's packages), pytest.log (the suite's report).
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from imagematrix.model import datafile, gpurun, labels, lockfile, paths, tags
from imagematrix.model.errors import InputError
from imagematrix.model.matrix import Matrix, Row
from imagematrix.stages import locks

WEIGHT_SYNC_KEYS = ("training/rollout_actor_probs_pearson_corr", "training/rollout_probs_diff_max")
GENERATED_RE = re.compile(r"vLLM (\S+) \(([^,]+), dtype (\w+)\): generated (\[\[.*\]\])")
RAW_FIX = "pass the OUT folder of imagematrix/suites/gpu/run_host.sh (or run_image.sh) as the run wrote it"
# junit.xml and pytest.log carry the failures' tracebacks: larger than the JSON files, still bounded
LOG_MAX_BYTES = 32 * datafile.MAX_BYTES


def _bad(path: Path, problem: str, fix: str = RAW_FIX) -> InputError:
    return InputError(problem, where=str(path), fix=fix)


def tests_from_junit(path: Path) -> list[gpurun.TestResult]:
    data = datafile.read_bytes(path, limit=LOG_MAX_BYTES, fix=RAW_FIX)
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise _bad(path, f"not JUnit XML: {exc}") from None
    results = []
    for case in root.iter("testcase"):
        outcome, detail = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                message = (child.get("message") or "").strip()
                # the failure's first line, tabs and terminal escapes made spaces: one line of the record
                detail = gpurun.CONTROL_RE.sub(" ", message.splitlines()[0])[:300] if message else ""
        name = f"{Path(case.get('classname', '').replace('.', '/')).name}::{case.get('name')}"
        try:
            seconds = float(case.get("time", 0))
            if not math.isfinite(seconds):
                raise ValueError(f"time {case.get('time')!r} is no duration")
            results.append(gpurun.TestResult(name=name, outcome=outcome, duration_s=round(seconds, 1),
                                             detail=detail))
        except ValidationError as exc:
            raise _bad(path, f"testcase {name!r}: {datafile.describe(exc)}") from None
        except ValueError as exc:
            raise _bad(path, f"testcase {name!r}: {exc}") from None
    return results


def _gpu(path: Path) -> tuple[str, str, str, int]:
    lines = [line.split(", ") for line in datafile.read_text(path, fix=RAW_FIX).splitlines() if line.strip()]
    if not lines or len(lines[0]) < 4:
        raise InputError(f"{path}: no nvidia-smi answer", fix="run imagematrix/suites/gpu/run_host.sh on a GPU host")
    name, driver, _memory, capability = lines[0][:4]
    for value in (name, driver, capability):
        if len(value) > 300 or gpurun.CONTROL_RE.search(value):
            raise _bad(path, f"not an nvidia-smi answer: {value[:80]!r}",
                       fix="run imagematrix/suites/gpu/run_host.sh on a GPU host")
    return name, driver, capability, len(lines)


class _Env(BaseModel):
    """env.json (imagematrix/suites/gpu/scripts/env_json.py): what the record takes of it."""
    model_config = ConfigDict(extra="allow")

    row: str
    python: gpurun.Short
    torch_cuda: gpurun.Short | None = None
    versions: dict[gpurun.Short, gpurun.Short | None]


class _HostPackage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: gpurun.Short
    version: gpurun.Short
    locked: gpurun.Short | None = None
    match_ignoring_local: bool = False


class _HostVersions(BaseModel):
    """host-versions.json (imagematrix/suites/gpu/wheelhouse.py unpack)."""
    model_config = ConfigDict(extra="forbid")

    packages: list[_HostPackage]
    missing: list[gpurun.Short] = []


def _json(path: Path, model: type[BaseModel] | None = None, *, allow_nan: bool = False):
    """A raw results JSON file, checked against `model` (strictly: no conversion) when one is given."""
    data = datafile.load_json(path, fix=RAW_FIX, allow_nan=allow_nan)
    if model is None:
        return data
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        raise _bad(path, f"not the {path.name} of a GPU run: {datafile.describe(exc)}") from None


def _wheels(raw: Path, lock_entries: int) -> gpurun.Wheels | None:
    """host-versions.json: the locked packages left to the host and what it had; omitted.txt: those left out."""
    path = raw / "host-versions.json"
    if not path.is_file():
        return None
    host = _json(path, _HostVersions)
    omitted_path = raw / "omitted.txt"
    omitted = sorted(datafile.read_text(omitted_path, fix=RAW_FIX).split()) if omitted_path.is_file() else []
    same = sorted(p.name for p in host.packages if p.match_ignoring_local)
    other = sorted(f"{p.name} {p.version} (locked {p.locked})" for p in host.packages if not p.match_ignoring_local)
    try:
        return gpurun.Wheels(
            source="the row's lock: its wheels hash-checked and installed with pip --target over the host's Python; "
                   "the largest CUDA packages taken from the host where it has the locked version",
            from_lock=lock_entries - len(host.packages) - len(omitted), from_host_same_version=same,
            from_host_other_version=other, absent=sorted(host.missing), omitted=omitted)
    except ValidationError as exc:
        raise _bad(path, f"not the host-versions.json (with omitted.txt) of a GPU run: {datafile.describe(exc)}") \
            from None


def numbers(raw: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    train = raw / "verl_train.json"
    if train.is_file():
        data = _json(train, allow_nan=True)  # Python's json writes a metric that is NaN as NaN
        steps = data.get("steps") if isinstance(data, dict) else None
        if not isinstance(data, dict) or not isinstance(steps or {}, dict) \
                or not all(isinstance(metrics, dict) for metrics in (steps or {}).values()):
            raise _bad(train, "not the verl_train.json of a GPU run: a mapping (passed, wall_s, attn_implementation, "
                              "metrics, steps: step -> metrics) was expected")
        found = {"verl_train": {key: data.get(key) for key in ("passed", "wall_s", "attn_implementation", "metrics")},
                 # the weight sync FSDP -> vLLM: the actor's and the rollout's token probabilities agree when it worked
                 "verl_weight_sync": {step: {k: metrics.get(k) for k in WEIGHT_SYNC_KEYS}
                                      for step, metrics in (steps or {}).items()}}
        for key, value in found.items():
            try:
                gpurun.check_numbers(key, value)
            except ValueError as exc:
                raise _bad(train, f"not the verl_train.json of a GPU run: {exc}") from None
        out.update(found)
    log = raw / "pytest.log"
    if log.is_file():
        text = datafile.read_bytes(log, limit=LOG_MAX_BYTES, fix=RAW_FIX).decode("utf-8", errors="replace")
        for match in GENERATED_RE.finditer(text):
            where = f"{log}:{text.count(chr(10), 0, match.start()) + 1}"
            key = f"vllm_{match.group(2).replace(' ', '_').lower()}_token_ids"
            tokens = datafile.parse_json(match.group(4), where, fix=RAW_FIX)
            try:
                gpurun.check_numbers(key, tokens)
            except ValueError as exc:
                raise InputError(f"not a token line of the GPU suite: {exc}", where=where, fix=RAW_FIX) from None
            out[key] = tokens
    return out


def record(matrix: Matrix, row: Row, raw: Path, date: str, mode: str, note: str = "") -> gpurun.GpuRun:
    """The run record of a raw results folder, for this row (whose lock the run installed). Every raw file is
    checked as it is read: a bad one is an InputError naming it."""
    for needed in ("junit.xml", "gpu.csv", "env.json"):
        if not (raw / needed).is_file():
            raise InputError(f"{raw / needed} is missing", where=str(raw),
                             fix="pass the OUT folder of imagematrix/suites/gpu/run_host.sh")
    env = _json(raw / "env.json", _Env)
    if env.row != row.id:
        raise InputError(f"{raw} holds a run of row {env.row}, not {row.id}", fix=f"pass --row {env.row}")
    lock_text = locks.read_lock(matrix, row)
    name, driver, capability, count = _gpu(raw / "gpu.csv")
    tests = tests_from_junit(raw / "junit.xml")
    wheels = _wheels(raw, len(lockfile.parse(lock_text)))
    found = numbers(raw)
    image, image_lock = _image(raw) if mode == "image" else (None, None)
    lock_sha256, pins = lockfile.file_sha256(lock_text), lockfile.pins_digest(lock_text)
    if image_lock is not None and image_lock != lock_sha256:  # the image was built from another lock than today's
        lock_sha256, pins = image_lock, ""
    try:
        return gpurun.GpuRun(
            date=date, row=row.id, lock_sha256=lock_sha256, lock_pins_sha256=pins, mode=mode, gpu=name,
            gpus=count, capability=capability, driver=driver, python=env.python, torch=env.versions.get("torch") or "",
            torch_cuda=env.torch_cuda or "", versions=env.versions, wheels=wheels, tests=tests, numbers=found,
            note=note, image=image)
    except ValidationError as exc:  # what the files above do not check alone: gpu.csv's and env.json's strings
        raise InputError(f"the results make no valid record: {datafile.describe(exc)}", where=str(raw),
                         fix=f"{RAW_FIX}; --note is one line") from None


def _image(raw: Path) -> tuple[gpurun.ImageRef, str | None]:
    """image.json of an image-mode run (imagematrix/suites/gpu/run_image.sh): the exported image's reference and digest,
    and the digest of the lock it was built from (its label), which is the run's lock, whatever the lock is today."""
    path = raw / "image.json"
    fix = "pass the OUT folder of imagematrix/suites/gpu/run_image.sh, or --mode host"
    data = datafile.load_json(path, fix=fix) if path.is_file() else None
    try:
        lock = (data.get("labels") or {}).get(labels.LOCK_SHA256)
        if lock is not None and not (isinstance(lock, str) and re.fullmatch(r"[0-9a-f]{64}", lock)):
            raise ValueError(f"label {labels.LOCK_SHA256} is not 64 hex digits")
        return gpurun.ImageRef(ref=data["image"], manifest_digest=data["manifest_digest"],
                               runner="imagerun: overlay over the unpacked layers, own mount and PID namespaces, "
                                      "host network, no cgroups"), lock
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise InputError(f"{path}: not the image.json of an image-mode run ({type(exc).__name__})", fix=fix) from None


def write(run: gpurun.GpuRun, folder: Path = gpurun.RUNS) -> Path:
    """The record as folder/<date>-<row>-<N>.json (N: the first free number); its date and row, which name the
    file, are checked first and the file is proven to land in folder itself before anything is written."""
    try:
        gpurun.check_date(run.date)
    except ValueError as exc:
        raise InputError(f"the record's date {exc}",
                         fix="pass --date YYYY-MM-DD, a real day (e.g. 2026-12-02)") from None
    if not tags.TAG_RE.fullmatch(run.row):
        raise InputError(f"the record's row id {run.row!r} cannot name a file",
                         fix="pass --row with a row id of the matrix")
    seq = 1
    while (folder / run.file_name(seq)).exists():
        seq += 1
    path = folder / run.file_name(seq)
    if path.resolve().parent != folder.resolve():
        raise InputError(f"the record {path} would not be in {folder}",
                         fix="pass --date YYYY-MM-DD and a row id of the matrix")
    paths.write_atomic(path, run.model_dump_json(indent=1) + "\n")
    return path
