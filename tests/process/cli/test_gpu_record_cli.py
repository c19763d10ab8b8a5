"""Issue 26, item 2: `gpu-record --date` names the record's file under docs/gpu-runs. A date that is not a calendar
day YYYY-MM-DD (a path that climbs out, a word that would sort as the newest run, Feb 30) is bad input: exit 2, a
message naming --date, nothing written anywhere. Through build.py as a process; the raw results are made up."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from imagematrix.model import gpurun
from imagematrix.model.errors import InputError
from imagematrix.stages import gpu_record
from tests.conftest import ROOT
from tests.support import GPU_ROW as ROW
from tests.support import gpu_raw_results


def _tree(folder) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")} if folder.exists() else {}


@pytest.fixture
def runs_untouched():
    """docs/gpu-runs as it was; whatever a failing test left there is removed afterwards."""
    before = _tree(gpurun.RUNS)
    yield before
    for name in sorted(set(_tree(gpurun.RUNS)) - set(before), reverse=True):  # files before their folders
        left = gpurun.RUNS / name
        left.rmdir() if left.is_dir() else left.unlink()


@pytest.fixture
def raw(tmp_path):
    return gpu_raw_results(tmp_path / "raw")


def _gpu_record(raw, date: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "build.py", "gpu-record", str(raw), "--row", ROW, "--date", date],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def _refused(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "--date" in proc.stderr and "YYYY-MM-DD" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    assert "wrote" not in proc.stdout, proc.stdout


def test_a_date_that_climbs_out_of_docs_gpu_runs_writes_nothing(raw, tmp_path, runs_untouched):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "planted.json").write_text("{}")  # would be parsed as a record once a file landed beside it
    date = os.path.relpath(outside / "x", gpurun.RUNS)
    assert date.startswith("..")
    before = _tree(tmp_path)
    _refused(_gpu_record(raw, date))
    assert _tree(tmp_path) == before
    assert _tree(gpurun.RUNS) == runs_untouched


@pytest.mark.parametrize("date", ["not-a-date", "2026-02-30", "2026-13-01", "2026-1-2", "20261202",
                                  "2026-12-02\n", "2026-12-02/x", "9999-99-99"])
def test_a_date_that_is_not_a_calendar_day_is_bad_input_and_writes_nothing(date, raw, tmp_path, runs_untouched):
    before = _tree(tmp_path)
    _refused(_gpu_record(raw, date))
    assert _tree(tmp_path) == before
    assert _tree(gpurun.RUNS) == runs_untouched


def _run(**changes) -> gpurun.GpuRun:
    fields = dict(date="2026-12-02", row=ROW, lock_sha256="0" * 64, mode="host", gpu="NVIDIA H200", gpus=1,
                  capability="9.0", driver="580", python="3.12.3", torch="2.11.0", torch_cuda="13.0", versions={},
                  tests=[])
    # the model refuses such a date or row (issue 26, item 8); model_copy does not validate, so write()'s own checks
    # are what is tested here
    return gpurun.GpuRun(**fields).model_copy(update=changes)


@pytest.mark.parametrize("changes", [{"date": "../../x"}, {"date": "2026-02-30"}, {"row": "../../x"},
                                     {"row": "a/b"}, {"row": f"{ROW}\n"}, {"row": ".."}])
def test_the_stage_never_writes_a_record_whose_name_leaves_its_folder(changes, tmp_path):
    folder = tmp_path / "a" / "b" / "runs"
    folder.mkdir(parents=True)
    with pytest.raises(InputError):
        gpu_record.write(_run(**changes), folder)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_the_stage_writes_a_good_record_in_its_folder(tmp_path):
    path = gpu_record.write(_run(), tmp_path)
    assert path.parent == tmp_path and path.name == f"2026-12-02-{ROW}-1.json"
