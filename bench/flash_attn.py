"""Metric: a flash-attn wheel compiled once and reused (issue 15).

Measured here, each run: importing a compiled wheel into the registry as flash-attn-wheels:<key>
(`build.py flash-attn import`) and reusing it (`build.py flash-attn get`, which finds the key in the registry and
compiles nothing), both against a registry namespace of the run's own. The compile itself is not re-run (22 minutes on 16 cores, hours here): its figures come from the records
in bench/records/ (the compile script's own record of the GPU-host compile, and the progress lines of a compile in
this machine's compile stage, stopped after a few units) and are labelled as such.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from imagematrix.knowledge import flash_attn as fa_knowledge
from imagematrix.model import matrix as matrix_mod
from imagematrix.model.flash_attn import WHEEL_REPOSITORY

from .common import ROOT, Context, OutcomeError, build_py, log, median, timed
from .report import line

RECORDS = ROOT / "bench" / "records"
HOST_RECORD = RECORDS / "flash-attn-2.8.3-sm90-h200.json"
LOCAL_PROGRESS = RECORDS / "flash-attn-2.8.3-sm90-2core.txt"
WHEEL_ENV = "IMAGEMATRIX_FA_WHEEL"  # the compiled wheel file (default: .gpu/fa/<record's wheel>)
PROGRESS_RE = re.compile(r"flash-attn compile: (\d+)/(\d+) units, (?:(\d+)m)?(\d+)s elapsed")


def _local_units(path: Path) -> tuple[int, int, float] | None:
    """(units done, total, seconds) of the last progress line of a partial compile, if recorded."""
    if not path.is_file():
        return None
    found = None
    for match in PROGRESS_RE.finditer(path.read_text()):
        found = (int(match.group(1)), int(match.group(2)), int(match.group(3) or 0) * 60 + int(match.group(4)))
    return found


def flash_attn(ctx: Context) -> dict[str, Any]:
    record = json.loads(HOST_RECORD.read_text())
    row = next(r for r in matrix_mod.load(ROOT / "matrix.yaml").rows
               if r.flash_attn == "2.8.3" and fa_knowledge.wheel_spec(r).key.endswith("-sm90"))
    wheel = Path(os.environ.get(WHEEL_ENV) or ROOT / ".gpu" / "fa" / record["wheel"])
    if not wheel.is_file():
        raise FileNotFoundError(f"{wheel}: set {WHEEL_ENV} to the compiled wheel of {HOST_RECORD.name}")
    namespace = f"127.0.0.1:5000/imagematrix-bench-{ctx.nonce}"
    ctx.janitor.namespaces.append(namespace.split("/", 1)[1])
    ref = f"{namespace}/{WHEEL_REPOSITORY}:{fa_knowledge.wheel_spec(row).key}"
    log(f"flash-attn: import {wheel.name} as {ref}")
    imported = timed(build_py("flash-attn", "import", str(wheel), "--record", str(HOST_RECORD), "--row", row.id,
                               "--registry", namespace, "--log-dir", str(ctx.work / "logs")))
    if imported.rc != 0:
        raise OutcomeError(f"flash-attn import failed: {imported.out[-600:]}")
    ctx.janitor.image(ref)
    reuse = []
    for _ in range(ctx.runs):
        got = timed(build_py("flash-attn", "get", "--row", row.id, "--registry", namespace, "--no-flash-attn-compile",
                             "--flash-attn-mirror", "http://127.0.0.1:9/none", "--log-dir", str(ctx.work / "logs")),
                    env={**os.environ, "COLUMNS": "1000"})  # one line per message, so the check below can read it
        if got.rc != 0 or f"holds {record['wheel']} (sha256 {record['sha256']})" not in got.out:
            raise OutcomeError(f"flash-attn get did not reuse the registry's wheel: {got.out[-600:]}")
        reuse.append(got.seconds)
    local = _local_units(LOCAL_PROGRESS)
    host_core_s = record["seconds"] * record["cores"] / record["units"]
    lines = [
        line("compile flash-attn 2.8.3 for sm_90, 16 cores (GPU host, host mode)", record["seconds"], "s",
             ours_note=f"{record['units']} units, MAX_JOBS={record['jobs']}, recorded"),
        line("reuse: `flash-attn get` finds the key in the registry", median(reuse), "s",
             ours_note=f"median of {ctx.runs}", ref=record["seconds"], ref_what="compiling it",
             ratio=median(reuse) / record["seconds"], ratio_what="reuse / compile"),
        line("import the compiled wheel into the registry", imported.seconds, "s",
             ours_note=f"{record['size'] / 1e6:.1f} MB wheel"),
    ]
    notes = [f"GPU-host compile record: {HOST_RECORD.relative_to(ROOT)} (nvcc {record['nvcc_release']}, torch "
             f"{record['torch']}, {record['available_gb']} GB available): {host_core_s:.0f} core-seconds per unit",
             f"reuse samples (s): {[round(s, 2) for s in reuse]}"]
    if local:
        done, total, seconds = local
        per_unit = seconds / done
        lines.append(line(f"compile here, 2 cores: {done} of {total} units (then stopped)", seconds, "s",
                          ours_note="recorded", ref=per_unit * total, ref_what="extrapolated to all units",
                          ratio=(per_unit * total) / record["seconds"], ratio_what="2 cores / 16 cores"))
        notes.append(f"2-core compile: {LOCAL_PROGRESS.relative_to(ROOT)}, the compile stage's progress lines "
                     f"(MAX_JOBS=2, nvcc 13.0 from PyPI's wheels); {done} units in {seconds:.0f} s, extrapolated "
                     "linearly (the first unit, flash_api.cpp, is host C++ and faster than the kernels)")
    return {
        "title": "flash-attn: compiled once, reused from the registry",
        "method": ("`build.py flash-attn import` of the wheel the GPU host compiled (with its record) into a "
                   "registry namespace of the run's own, then `build.py flash-attn get --no-flash-attn-compile` "
                   f"{ctx.runs} times with an unreachable mirror and no index (each must report the registry's "
                   "wheel and its sha256). Compile times are recorded, not re-run: see the notes. A row build "
                   "then installs the wheel from the wheel image (the verl 0.9.1 flash-attn row: 322 s for build, "
                   "smoke tests and push with the deps stage cached)."),
        "notes": notes,
        "lines": lines,
        "details": {"record": record, "reuse_seconds": reuse, "import_seconds": imported.seconds,
                    "local_units": local},
    }
