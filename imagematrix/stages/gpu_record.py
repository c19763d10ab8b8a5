"""GPU record stage: a run's raw results (tests/smoke/gpu/run_host.sh's OUT folder) -> docs/gpu-runs/<...>.json.

Read: junit.xml (each test's outcome and duration), gpu.csv (nvidia-smi), env.json (versions as the suite's Python
imports them), verl_train.json (the training smoke's numbers), host-versions.json (which locked packages the host
already had; written when the row's wheels were layered over a host's packages), pytest.log (the suite's report).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from imagematrix.model import gpurun, lockfile, paths, tags
from imagematrix.model.errors import InputError
from imagematrix.model.matrix import Matrix, Row
from imagematrix.stages import locks

WEIGHT_SYNC_KEYS = ("training/rollout_actor_probs_pearson_corr", "training/rollout_probs_diff_max")
GENERATED_RE = re.compile(r"vLLM (\S+) \(([^,]+), dtype (\w+)\): generated (\[\[.*\]\])")


def tests_from_junit(path: Path) -> list[gpurun.TestResult]:
    results = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, detail = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                detail = (child.get("message") or "").splitlines()[0][:300] if child.get("message") else ""
        name = f"{Path(case.get('classname', '').replace('.', '/')).name}::{case.get('name')}"
        results.append(gpurun.TestResult(name=name, outcome=outcome, duration_s=round(float(case.get("time", 0)), 1),
                                         detail=detail))
    return results


def _gpu(path: Path) -> tuple[str, str, str, int]:
    lines = [line.split(", ") for line in path.read_text().splitlines() if line.strip()]
    if not lines or len(lines[0]) < 4:
        raise InputError(f"{path}: no nvidia-smi answer", fix="run tests/smoke/gpu/run_host.sh on a GPU host")
    name, driver, _memory, capability = lines[0][:4]
    return name, driver, capability, len(lines)


def _wheels(raw: Path, lock_entries: int) -> gpurun.Wheels | None:
    """host-versions.json: the locked packages left to the host and what it had; omitted.txt: those left out."""
    path = raw / "host-versions.json"
    if not path.is_file():
        return None
    host = json.loads(path.read_text())
    omitted = sorted((raw / "omitted.txt").read_text().split()) if (raw / "omitted.txt").is_file() else []
    same = sorted(p["name"] for p in host["packages"] if p.get("match_ignoring_local"))
    other = sorted(f"{p['name']} {p['version']} (locked {p['locked']})" for p in host["packages"]
                   if not p.get("match_ignoring_local"))
    return gpurun.Wheels(
        source="the row's lock: its wheels hash-checked and installed with pip --target over the host's Python; "
               "the largest CUDA packages taken from the host where it has the locked version",
        from_lock=lock_entries - len(host["packages"]) - len(omitted), from_host_same_version=same,
        from_host_other_version=other,
        absent=sorted(host.get("missing", [])), omitted=omitted)


def numbers(raw: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    train = raw / "verl_train.json"
    if train.is_file():
        data = json.loads(train.read_text())
        out["verl_train"] = {key: data.get(key) for key in ("passed", "wall_s", "attn_implementation", "metrics")}
        # the weight sync FSDP -> vLLM: the actor's and the rollout's token probabilities agree when it worked
        out["verl_weight_sync"] = {step: {k: metrics.get(k) for k in WEIGHT_SYNC_KEYS}
                                   for step, metrics in (data.get("steps") or {}).items()}
    log = raw / "pytest.log"
    if log.is_file():
        for match in GENERATED_RE.finditer(log.read_text(errors="replace")):
            out[f"vllm_{match.group(2).replace(' ', '_').lower()}_token_ids"] = json.loads(match.group(4))
    return out


def record(matrix: Matrix, row: Row, raw: Path, date: str, mode: str, note: str = "") -> gpurun.GpuRun:
    """The run record of a raw results folder, for this row (whose lock the run installed)."""
    for needed in ("junit.xml", "gpu.csv", "env.json"):
        if not (raw / needed).is_file():
            raise InputError(f"{raw / needed} is missing", where=str(raw),
                             fix="pass the OUT folder of tests/smoke/gpu/run_host.sh")
    env = json.loads((raw / "env.json").read_text())
    if env.get("row") != row.id:
        raise InputError(f"{raw} holds a run of row {env.get('row')}, not {row.id}", fix=f"pass --row {env.get('row')}")
    lock_text = locks.read_lock(matrix, row)
    name, driver, capability, count = _gpu(raw / "gpu.csv")
    versions = env["versions"]
    return gpurun.GpuRun(
        date=date, row=row.id, lock_sha256=lockfile.file_sha256(lock_text),
        lock_pins_sha256=lockfile.pins_digest(lock_text), mode=mode, gpu=name,
        gpus=count, capability=capability, driver=driver, python=env["python"], torch=versions.get("torch") or "",
        torch_cuda=env.get("torch_cuda") or "", versions=versions, wheels=_wheels(raw, len(lockfile.parse(lock_text))),
        tests=tests_from_junit(raw / "junit.xml"), numbers=numbers(raw), note=note,
        image=_image(raw) if mode == "image" else None)


def _image(raw: Path) -> gpurun.ImageRef:
    """image.json of an image-mode run (tests/smoke/gpu/run_image.sh): the exported image's reference and digest."""
    path = raw / "image.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.stat().st_size <= 1 << 20 else None
        return gpurun.ImageRef(ref=data["image"], manifest_digest=data["manifest_digest"],
                               runner="imagerun: overlay over the unpacked layers, own mount and PID namespaces, "
                                      "host network, no cgroups")
    except (OSError, ValueError, TypeError, KeyError, RecursionError) as exc:
        raise InputError(f"{path}: not the image.json of an image-mode run ({type(exc).__name__})",
                         fix="pass the OUT folder of tests/smoke/gpu/run_image.sh, or --mode host") from None


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
