"""The bench verifies what it times (issue 30, item 1): build.py runs under the bench's own interpreter; a command
that does not do what its metric measures (exit code, the message it must print) fails the metric and the run
(exit 1), and a failed run leaves the results files as they were. build.py is a planted fake here (no Docker)."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

import bench.__main__ as bench_main
from bench import common
from imagematrix.tools import docker

ROOT = Path(__file__).resolve().parents[3]
CRASH = "raise ModuleNotFoundError(\"No module named 'pydantic'\")\n"  # build.py under a Python without the deps
FAKE = """\
import json, sys
args = sys.argv[1:]
if args[0] == "plan":
    print(json.dumps({"include": [{"row": "a", "vllm": "0.8.5"}, {"row": "b", "vllm": "0.9.0"}]}))
    sys.exit(0)
if args[0] == "validate":
    print(%r)
    sys.exit(%d)
sys.exit(3)
"""
COMMITTED_RESULTS = '{"schema": 1, "runs": {}, "metrics": {}, "committed": true}\n'
COMMITTED_DOC = "# Benchmarks (committed)\n"


@pytest.fixture
def bench(tmp_path, monkeypatch):
    """main() with a planted build.py, its work directory under tmp_path, no Docker; returns (run, out, doc)."""
    monkeypatch.setattr(bench_main, "WORK", tmp_path / "work")
    monkeypatch.setattr(docker, "cli", lambda: "docker")
    monkeypatch.setattr(bench_main, "versions", lambda: {})
    monkeypatch.setattr(common.Janitor, "clean", lambda self: {})
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # leave pytest's own handlers alone
    out, doc = tmp_path / "results.json", tmp_path / "benchmarks.md"
    out.write_text(COMMITTED_RESULTS)
    doc.write_text(COMMITTED_DOC)

    def run(build_py: str, *argv: str) -> int:
        fake = tmp_path / "build.py"
        fake.write_text(build_py)
        monkeypatch.setattr(common, "BUILD_PY", [sys.executable, str(fake)])
        return bench_main.main([*argv, "--runs", "2", "--out", str(out), "--doc", str(doc)])

    return run, out, doc


def _record(tmp_path: Path) -> dict:
    (kept,) = (tmp_path / "work").glob("*/logs/results.json")
    return json.loads(kept.read_text())


def test_a_crashing_build_py_fails_the_quick_run_and_writes_nothing(bench, tmp_path):
    """The reported run: every command crashed on an import, the crash was timed as a rejection, the run passed."""
    run, out, doc = bench
    assert run(CRASH, "--quick") == 1
    assert out.read_text() == COMMITTED_RESULTS and doc.read_text() == COMMITTED_DOC
    metric = _record(tmp_path)["metrics"]["fail_fast"]
    assert "lines" not in metric  # no number
    assert metric["error"].startswith("OutcomeError: `python") and "build.py validate --matrix" in metric["error"]
    assert "expected exit code 2 and the conflict named" in metric["error"]
    assert "got exit code 1" in metric["error"] and "ModuleNotFoundError" in metric["error"]
    assert "validate_all" not in _record(tmp_path)["metrics"]  # the run stopped at its first failed metric


def test_a_rejection_that_does_not_name_the_conflict_is_no_rejection(bench, tmp_path):
    run, out, doc = bench
    assert run(FAKE % ("error: matrix.yaml:1: expected a mapping", 2), "--only", "fail_fast") == 1
    assert out.read_text() == COMMITTED_RESULTS and doc.read_text() == COMMITTED_DOC
    assert "`cannot be resolved together`" in _record(tmp_path)["metrics"]["fail_fast"]["error"]


@pytest.mark.parametrize("said, code", [("validated 1 row(s) in 0.1 s", 0), ("validated 2 row(s) in 0.1 s", 1)],
                         ids=["not-every-row", "exit-1"])
def test_validate_must_exit_0_having_validated_every_row(bench, tmp_path, said, code):
    run, out, doc = bench
    assert run(FAKE % (said, code), "--only", "validate_all", "--strict") == 1
    assert out.read_text() == COMMITTED_RESULTS and doc.read_text() == COMMITTED_DOC
    assert "expected exit code 0 and `validated 2 row(s)`" in _record(tmp_path)["metrics"]["validate_all"]["error"]


def test_a_run_whose_commands_do_what_they_measure_is_written(bench):
    run, out, doc = bench
    assert run(FAKE % ("validated 2 row(s) in 0.1 s", 0), "--only", "validate_all") == 0
    metric = json.loads(out.read_text())["metrics"]["validate_all"]
    assert "error" not in metric and len(metric["details"]["seconds"]) == 2
    assert metric["lines"][0]["what"] == "validate 2 rows"
    assert "validate 2 rows" in doc.read_text()


def test_build_py_runs_under_the_bench_interpreter_not_the_first_python3_on_path(tmp_path):
    """From a venv that is not activated, `python3` on PATH is another Python (here: one that cannot start)."""
    assert common.BUILD_PY == [sys.executable, str(ROOT / "build.py")]
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for name in ("python", "python3"):
        (fake_bin / name).write_text("#!/bin/sh\necho 'ModuleNotFoundError: no deps here' >&2\nexit 1\n")
        (fake_bin / name).chmod(0o755)
    result = common.timed(common.build_py("--help"), env={**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}"})
    assert result.rc == 0 and "usage: build.py" in result.out, result.out


# --- the gate of CI (issue 30, item 2): a ratio measured side by side fails it, an absolute figure informs -------

def _measure(lines):
    def measure(ctx):
        return {"title": "planted", "method": "", "notes": [], "lines": lines, "details": {}}
    return measure


@pytest.mark.parametrize("ratio, absolute, code", [(40.0, 0.5, 0), (20.0, 0.5, 1), (40.0, 5.0, 0)],
                         ids=["both-met", "ratio-missed", "only-absolute-missed"])
def test_the_gate_fails_only_on_a_missed_ratio(bench, monkeypatch, ratio, absolute, code):
    from bench.report import line, target

    run, out, doc = bench
    planted = {"validate_all": _measure([
        line("fail-fast", 1.0, "s", ref=ratio, ratio=ratio, target=target("ratio", ">=", 30)),
        line("no-op", absolute, "s", target=target("ours", "<", 1))])}
    monkeypatch.setattr(bench_main, "_measures", lambda: planted)
    assert run(FAKE % ("", 0), "--only", "validate_all", "--gate") == code
    assert json.loads(out.read_text())["metrics"]["validate_all"]["lines"][0]["ratio"] == ratio  # written either way
    assert run(FAKE % ("", 0), "--only", "validate_all") == 0  # without --gate a missed target only shows


def test_ci_runs_the_quick_tier_as_a_gate_without_touching_the_committed_results():
    script = (ROOT / ".ci" / "run").read_text().splitlines()
    (index,) = [i for i, text in enumerate(script) if text.startswith('"$py" -m bench ')]
    command = script[index]
    assert "--quick" in command and "--gate" in command and command.endswith("|| bench_status=$?")
    assert '--out "$bench_out/results.json"' in command and '--doc "$bench_out/benchmarks.md"' in command
    # after the main job's build, which makes imagematrix-base:bookworm (the fail-fast peer builds FROM it)
    assert index > script.index('"$py" build.py build --row verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311')
    assert script[-1] == "exit $bench_status" and '[ "$status" -ne 0 ] && exit $status' in script
