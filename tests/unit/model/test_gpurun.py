"""GPU run records: the image table's GPU cell never says more than the records do."""

from __future__ import annotations

from imagematrix.model import gpurun
from imagematrix.model import matrix as matrix_mod

PINS = "1" * 64  # the pins digest of the lock the runs installed


def _run(tests: dict[str, str], date: str = "2026-12-02", row: str = "r1") -> gpurun.GpuRun:
    return gpurun.GpuRun(
        date=date, row=row, lock_sha256="0" * 64, mode="host", gpu="NVIDIA H200", gpus=1, capability="9.0",
        driver="580.159.04", python="3.12.3", torch="2.11.0", torch_cuda="13.0", versions={}, lock_pins_sha256=PINS,
        wheels=gpurun.Wheels(source="lock", from_lock=1),
        tests=[gpurun.TestResult(name=n, outcome=o, duration_s=1.0) for n, o in tests.items()])


def test_a_row_without_records_never_ran_on_a_gpu():
    assert gpurun.summary([]) == "never run on a GPU"


def test_a_failure_is_reported_as_such():
    cell = gpurun.summary([_run({"a": "passed", "b": "failed", "c": "skipped"})], PINS)
    assert cell.startswith("GPU suite FAILED on H200, host mode, same wheels, 2026-12-02")
    assert "1 passed, 1 failed, 1 skipped" in cell


def test_a_rerun_of_one_test_replaces_only_that_test():
    first = _run({"a": "passed", "b": "failed", "c": "skipped"})
    rerun = _run({"b": "passed"})
    assert gpurun.summary([first, rerun], PINS) == ("GPU suite passed on H200, host mode, same wheels, 2026-12-02 "
                                              "(2 passed, 1 skipped)")
    # and a later failure of a test that had passed turns the row back
    assert "FAILED" in gpurun.summary([first, rerun, _run({"a": "failed"})])


def test_only_skips_is_not_a_pass():
    assert "FAILED" in gpurun.summary([_run({"a": "skipped"})])


def test_records_load_oldest_first_and_group_by_row(tmp_path):
    for name, run in (("b.json", _run({"a": "passed"}, date="2026-12-03")), ("a.json", _run({"a": "failed"}))):
        (tmp_path / name).write_text(run.model_dump_json())
    runs = gpurun.load_all(tmp_path)
    assert [r.date for r in runs] == ["2026-12-02", "2026-12-03"]
    assert list(gpurun.by_row(runs)) == ["r1"]


def test_the_committed_records_are_valid():
    runs = gpurun.load_all()
    assert runs, "docs/gpu-runs/ holds the H200 runs of the verl 0.9.1 rows and the H100 image-mode run"
    assert {r.mode for r in runs if r.row == "verl0.9.1-vllm0.24.0-torch2.11.0-cu130-py311"} == {"image"}
    assert {r.row for r in runs} == {"verl0.9.1-vllm0.24.0-torch2.11.0-cu130-py311",
                                     "verl0.9.1-vllm0.24.0-torch2.11.0-cu130-py312",
                                     "verl0.9.1-vllm0.24.0-torch2.11.0-cu130-py312-fa2.8.3",
                                     "verl0.9.1-vllm0.31.0-torch2.13.0-cu130-py312"}
    assert {r.row for r in runs} <= {row.id for row in matrix_mod.load().rows}


def test_same_wheels_is_claimed_only_while_the_lock_installs_what_ran():
    run = _run({"a": "passed"})
    assert "same wheels" in gpurun.summary([run], PINS)
    assert "wheels of an earlier lock" in gpurun.summary([run], "2" * 64)
    assert "wheels of an earlier lock" in gpurun.summary([run], None)  # the row's lock is stale or missing
