"""The tests of tests/unit/suites/test_verl_train_plan.py that start a process, serve HTTP or kill:
the process tier. The pure ones stay there."""

from __future__ import annotations

import sys

from tests.unit.suites.test_verl_train_plan import gpusmoke  # the GPU suite's module, on its path


def test_run_logged_streams_to_a_file_and_kills_at_the_timeout(tmp_path):
    ok = gpusmoke.run_logged([sys.executable, "-c", "print('step:1 - a:1')"], tmp_path / "a.log", 60)
    assert ok.returncode == 0 and gpusmoke.step_metrics(ok.output) == {1: {"a": 1.0}}
    assert (tmp_path / "a.log").read_text() == ok.output
    slow = gpusmoke.run_logged([sys.executable, "-c", "import time; print('x', flush=True); time.sleep(30)"],
                               tmp_path / "b.log", 1)
    assert slow.returncode != 0 and "[killed after 1 s]" in slow.output and "x" in slow.output
