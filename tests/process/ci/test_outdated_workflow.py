"""The scheduled outdated workflow (.github/workflows/outdated.yml): guarded to the upstream repository, least
privilege, and its proposal step's script run for real here with a stand-in `python build.py` (GitHub and the
index are faked: the test is about what the script does with outdated's answer and exit status)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.conftest import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "outdated.yml"


def _workflow() -> dict:
    return YAML(typ="safe").load(WORKFLOW.read_text())


def _step(name: str) -> dict:
    return next(s for s in _workflow()["jobs"]["propose"]["steps"] if s.get("name") == name)


def test_runs_weekly_and_on_dispatch_only_upstream_with_least_privilege():
    wf = _workflow()
    on = wf.get("on") or wf.get(True)  # YAML 1.1 reads the key `on` as true
    assert set(on) == {"schedule", "workflow_dispatch"} and on["schedule"][0]["cron"].endswith("* * 1")
    job = wf["jobs"]["propose"]
    assert wf["permissions"] == {} and job["permissions"] == {"contents": "write", "pull-requests": "write"}
    assert job["if"] == "${{ github.repository == vars.UPSTREAM_REPOSITORY }}"
    assert all("@" in s["uses"] and len(s["uses"].split("@")[1]) == 40 for s in job["steps"] if "uses" in s)


STUB = r'''#!/usr/bin/env bash
# Stand-in for `python`: build.py calls are answered from $FAKE; everything else is the real interpreter.
if [ "$1" = build.py ]; then
  shift
  echo "$*" >> "$FAKE/calls.log"
  case "$1 $2" in
    "outdated --json") cat "$FAKE/outdated.json"; exit "$(cat "$FAKE/outdated.rc")" ;;
    "outdated --offline") echo "releases newer than the matrix covers (table)"; exit 1 ;;
    add-row*) [ "$3" = "0.99.0" ] && exit 2; exit 0 ;;
  esac
  exit 9
fi
exec REAL_PYTHON "$@"
'''


def _run_propose(tmp_path: Path, answer: dict | None, rc: int) -> tuple[subprocess.CompletedProcess, Path]:
    fake = tmp_path / "fake"
    (fake / "bin").mkdir(parents=True)
    stub = fake / "bin" / "python"
    stub.write_text(STUB.replace("REAL_PYTHON", sys.executable))
    stub.chmod(0o755)
    (fake / "outdated.json").write_text(json.dumps(answer or {"rows": []}))
    (fake / "outdated.rc").write_text(str(rc))
    work = tmp_path / "work"
    work.mkdir()
    output = tmp_path / "github_output"
    output.write_text("")
    env = {**os.environ, "PATH": f"{fake / 'bin'}:{os.environ['PATH']}", "FAKE": str(fake),
           "GITHUB_OUTPUT": str(output)}
    proc = subprocess.run(["bash", "-c", _step("outdated, then add-row for each proposal")["run"]], cwd=work, env=env,
                          capture_output=True, text=True)
    return proc, work


def _row(vllm: str, verl: str) -> dict:
    return {"package": "vllm", "version": vllm, "row": {"pins": {"vllm": vllm, "verl": verl, "python": "3.11"}}}


def test_each_proposal_becomes_one_add_row_and_the_body_says_what_happened(tmp_path):
    answer = {"rows": [_row("0.31.0", "0.9.1"), {"package": "vllm", "version": "0.33.0", "row": None},
                       _row("0.99.0", "0.9.1")]}
    proc, work = _run_propose(tmp_path, answer, 1)
    assert proc.returncode == 0, proc.stderr
    calls = (tmp_path / "fake" / "calls.log").read_text().splitlines()
    assert calls == ["outdated --json", "add-row --vllm 0.31.0 --verl 0.9.1 --python 3.11",
                     "add-row --vllm 0.99.0 --verl 0.9.1 --python 3.11", "outdated --offline"]
    assert "rows=1" in (tmp_path / "github_output").read_text()
    body = (work / "body.md").read_text()
    assert "- added vLLM 0.31.0 with verl 0.9.1 (Python 3.11)" in body
    assert "- vLLM 0.99.0 with verl 0.9.1: add-row refused it" in body and "(table)" in body


def test_a_current_matrix_opens_nothing_and_a_failure_fails_the_job(tmp_path):
    proc, _ = _run_propose(tmp_path / "a", None, 0)
    assert proc.returncode == 0 and "rows=0" in (tmp_path / "a" / "github_output").read_text()
    assert (tmp_path / "a" / "fake" / "calls.log").read_text().splitlines() == ["outdated --json"]
    proc, _ = _run_propose(tmp_path / "b", None, 2)
    assert proc.returncode == 2 and "build.py outdated failed (exit 2)" in proc.stderr


@pytest.mark.parametrize("name", ["open the pull request"])
def test_the_pull_request_step_runs_only_with_rows_and_commits_only_matrix_outputs(name):
    step = _step(name)
    assert step["if"] == "steps.propose.outputs.rows != '0'"
    assert "git add matrix.yaml locks dockerfiles/generated\n" in step["run"]
    assert "gh pr create --base main" in step["run"] and "--body-file body.md" in step["run"]
