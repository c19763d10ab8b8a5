"""doctor: facts -> nearest row, mismatches, rule violations and GPU problems, each with a fix.

The GPU facts below stand for machines this CI has not got (it has no GPU); the probe itself runs for real on
this Python, and inside a real image in tests/images.
"""

from __future__ import annotations

import json

import pytest

from imagematrix.assist import doctor
from imagematrix.model import matrix as matrix_mod
from tests.conftest import ROOT

M = matrix_mod.load(ROOT / "matrix.yaml")
ROW1 = M.rows[0]
CU124 = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]


def facts(packages: dict, gpus: list | None = None, driver: str | None = None, cuda: str = "12.4") -> dict:
    return {"python": "3.11.2", "executable": "/opt/venv/bin/python", "packages": packages, "driver": driver,
            "env": {}, "torch": {"version": packages.get("torch"), "cuda": cuda, "archs": CU124, "gpus": gpus or []}}


def test_an_image_of_a_row_is_healthy():
    report = doctor.analyse(M, facts({**ROW1.pins(), "ray": "2.60.0"}))
    assert report.nearest == ROW1.id and report.findings == []


def test_mismatches_and_the_forkingpickler_rule():
    report = doctor.analyse(M, facts({**ROW1.pins(), "torch": "2.6.0", "tensordict": "0.5.0"}))
    kinds = [(f.kind, f.message) for f in report.findings]
    assert report.nearest == ROW1.id
    assert ("mismatch", f"torch is 2.6.0, row {ROW1.id} pins 2.5.1") in kinds
    assert any(k == "rule" and "ForkingPickler" in m for k, m in kinds)
    assert all(f.fix for f in report.findings)


@pytest.mark.parametrize(("gpu", "expected"), [
    ({"name": "NVIDIA B200", "capability": [10, 0]}, "no kernel image is available"),
    ({"name": "Tesla T4", "capability": [7, 5]}, "no bfloat16"),
])
def test_gpu_problems(gpu, expected):
    report = doctor.analyse(M, facts(ROW1.pins(), [gpu]))
    assert any(f.kind == "gpu" and expected in f.message and ("pick" in f.fix or "float16" in f.fix) for f in report.findings)


def test_driver_older_than_the_torch_cuda():
    report = doctor.analyse(M, facts(ROW1.pins(), driver="535.104.05", cuda="12.8"))
    assert any(f.kind == "driver" and "minor-version compatibility" in f.message for f in report.findings)


def test_doctor_says_how_verl_trains_with_what_is_installed():
    report = doctor.analyse(M, facts({**ROW1.pins()}))  # verl 0.3 without flash-attn: the row is rollout-only
    assert report.training.startswith("rollout only: verl 0.3.0.post1 hard-codes flash_attention_2")
    assert any(line.startswith("verl training rollout only") for line in doctor.lines(report))
    with_fa = doctor.analyse(M, facts({**ROW1.pins(), "flash-attn": "2.7.4.post1"}))
    assert with_fa.training == "trains with flash_attention_2 (flash-attn 2.7.4.post1)"
    assert json.loads(with_fa.as_json())["training"] == with_fa.training


def test_a_scanned_rows_gpu_verdict_comes_from_its_binaries(tmp_path):
    """With coverage/<row>.json beside the matrix, doctor names the libraries without a kernel (not torch's list)."""
    import shutil

    from imagematrix.stages import coverage_row
    from imagematrix.stages.coverage_image import FileCoverage, ImageScan

    shutil.copy(ROOT / "matrix.yaml", tmp_path / "matrix.yaml")
    m = matrix_mod.load(tmp_path / "matrix.yaml")
    sp = "/opt/venv/lib/python3.11/site-packages"
    files = {f"{sp}/torch/lib/libtorch_cuda.so": FileCoverage("0" * 64, 1, "so", tuple(CU124), ()),
             f"{sp}/vllm/_moe_C.abi3.so": FileCoverage("0" * 64, 1, "so", ("sm_70", "sm_80"), ())}
    coverage_row.write(coverage_row.baseline_path(tmp_path, ROW1.id),
                       coverage_row.make_baseline(ROW1, ImageScan("r", files, {}, 1, 0, 0.1)))
    report = doctor.analyse(m, facts(ROW1.pins(), [{"name": "Tesla P100-PCIE-16GB", "capability": [6, 0]}]))
    assert any(f.kind == "gpu" and "vllm of row" in f.message and f"coverage/{ROW1.id}.json" in f.message
               for f in report.findings)  # torch's list has sm_60: the old check saw nothing
