"""Issue 28, item 5: each GPU run is held against the row's verdict for the GPU it ran on (docs/gpu-coverage.md,
"Checked on a real GPU"). The records are the committed image-mode run of 2026-12-07, varied; the verdicts are the
committed baseline coverage/verl0.9.1-vllm0.24.0-torch2.11.0-cu130-py311.json (sm_90 native, sm_52 none)."""

from __future__ import annotations

from imagematrix.model import gpurun
from imagematrix.model import matrix as matrix_mod
from imagematrix.stages import coverage_docs
from tests.conftest import ROOT

ROW = "verl0.9.1-vllm0.24.0-torch2.11.0-cu130-py311"
M = matrix_mod.load(ROOT / "matrix.yaml")


def _run(capability: str, kernel: str | None, row: str = ROW) -> gpurun.GpuRun:
    base = next(r for r in gpurun.load_all() if r.row == ROW and r.mode == "image"
                and any(t.name == coverage_docs.KERNEL_TEST for t in r.tests))
    tests = [t.model_copy(update={"outcome": kernel}) for t in base.tests if t.name == coverage_docs.KERNEL_TEST]
    return base.model_copy(update={"capability": capability, "row": row, "tests": tests if kernel else []})


def test_a_run_agrees_or_disagrees_with_the_verdict_for_its_gpu():
    (native_passed, native_failed, none_failed, none_passed) = coverage_docs.cross_check(
        M, [_run("9.0", "passed"), _run("9.0", "failed"), _run("5.2", "failed"), _run("5.2", "passed")])
    assert "| native | passed | agrees |" in native_passed
    assert "| native | failed | **disagrees** |" in native_failed
    assert "| none | failed | agrees |" in none_failed
    assert "| none | passed | **disagrees** |" in none_passed


def test_a_run_that_cannot_be_compared_says_why():
    no_test, no_baseline = coverage_docs.cross_check(
        M, [_run("9.0", None), _run("9.0", "passed", row="verl0.9.1-vllm0.31.0-torch2.13.0-cu130-py312")])
    assert no_test.endswith("| not compared: the kernel test did not run |")
    assert no_baseline.endswith("| not compared: no baseline for the row |")


def test_the_committed_image_mode_run_agrees_with_its_verdict():
    lines = coverage_docs.cross_check(M, [r for r in gpurun.load_all() if r.row == ROW])
    assert any(line.endswith("| native | passed | agrees |") for line in lines)
    assert not any("disagrees" in line for line in lines)
