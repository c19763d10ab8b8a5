"""Issue 15, item 4: flash-attn is compiled in a job of its own (images.yml `flash-attn`), once per wheel key, before
the row builds that need it; a row build never compiles it. The plan says which keys to compile (`flash_attn`,
`flash_attn_count`), the job pushes each wheel as REGISTRY/flash-attn-wheels:<key> (nothing on pull requests from
forks: the wheel reaches those builds as an artifact), and the build jobs run after it or without it."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from imagematrix.cli import app as cli
from imagematrix.knowledge.flash_attn import wheel_spec
from imagematrix.model import matrix as matrix_mod
from imagematrix.stages import flash_attn, plan
from tests.conftest import ROOT
from tests.process.ci.test_workflow import calls, run_script, step_calling, steps_of, workflow
from tests.support import actions_expand

WORKFLOW = ROOT / ".github" / "workflows" / "images.yml"
# Builds run after the flash-attn job succeeded, was skipped (nothing to compile) or failed: a failed compile fails
# only the rows that need its wheel (they never compile themselves), not every row.
TOLERATES_SKIP = "needs.flash-attn.result != 'cancelled'"


def _needs(job: dict) -> list[str]:
    return [job["needs"]] if isinstance(job["needs"], str) else list(job["needs"])


def _planned() -> list[plan.Planned]:
    m = matrix_mod.load(ROOT / "matrix.yaml")
    return plan.plan(m, list(m.rows), "127.0.0.1:5000/imagematrix", ask_registry=False)


# --- the plan: which keys to compile ------------------------------------------------------------------------------

def test_plan_lists_each_key_to_compile_once_with_a_row_that_compiles_it():
    planned = _planned()
    compiling = [p for p in planned if p.flash_attn and p.flash_attn[0] == "compile"]
    assert compiling, "matrix.yaml has a row whose flash-attn wheel is compiled (flash-attn 2.8.3, CUDA 13)"
    first = compiling[0]
    # the same key twice (two rows sharing a wheel) is compiled once; rows with another source are not compiled
    others = [dataclasses.replace(p, flash_attn=("registry", "reuses it")) for p in compiling]
    value = plan.flash_attn_matrix([first, *others, first, *planned])
    assert value["include"][0] == {"key": wheel_spec(first.row).key, "row": first.row.id}
    keys = [e["key"] for e in value["include"]]
    assert len(keys) == len(set(keys)) == len({wheel_spec(p.row).key for p in compiling})
    assert all(isinstance(v, str) for e in value["include"] for v in e.values())
    assert actions_expand(value) == value["include"]
    # nothing to compile: an empty matrix (an error in Actions), so the job is guarded by flash_attn_count
    assert plan.flash_attn_matrix([p for p in planned if p not in compiling]) == {"include": []}
    with pytest.raises(ValueError):
        actions_expand(plan.flash_attn_matrix([]))


def test_each_row_of_the_build_matrix_names_its_wheel_key():
    planned = _planned()
    include = plan.github_matrix(planned)["include"]
    for p, entry in zip(planned, include, strict=True):
        assert entry["flash_attn_key"] == (wheel_spec(p.row).key if p.row.flash_attn else "")
    compile_keys = {e["flash_attn_key"] for e in include if e["flash_attn_source"] == "compile"}
    assert compile_keys == {e["key"] for e in plan.flash_attn_matrix(planned)["include"]}


def test_github_outputs_carry_the_compile_matrix_and_its_count():
    planned = _planned()
    outputs = dict(line.split("=", 1) for line in plan.github_outputs(planned).splitlines())
    assert set(outputs) == {"matrix", "count", "flash_attn", "flash_attn_count", "platforms", "platforms_count"}
    assert json.loads(outputs["flash_attn"]) == plan.flash_attn_matrix(planned)
    assert outputs["flash_attn_count"] == str(len(plan.flash_attn_matrix(planned)["include"])) != "0"
    empty = dict(line.split("=", 1) for line in plan.github_outputs([]).splitlines())
    assert empty["flash_attn_count"] == "0" and json.loads(empty["flash_attn"]) == {"include": []}


def test_plan_all_still_asks_the_registry_for_wheels_so_a_compiled_key_is_not_compiled_again(run, tmp_path,
                                                                                               monkeypatch):
    """The schedule plans with --all (no final tags read); a key already in flash-attn-wheels must not start a
    3-hour compile every week."""
    asked = []

    def in_registry(wheel, registry):
        asked.append(wheel.key)
        return flash_attn.Wheel(f"{registry}/flash-attn-wheels:{wheel.key}", "f.whl", "0" * 64, "x"), "exists"

    monkeypatch.setattr(flash_attn, "from_registry", in_registry)
    monkeypatch.setattr(plan.publish, "remote_labels", lambda *a: pytest.fail("--all reads no final tag"))
    out_file = tmp_path / "github_output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(out_file))
    result = run("plan", "--github", "--all", "--registry", "r.example/o")
    assert result.code == 0, result
    assert asked and set(asked) == {wheel_spec(r).key for r in matrix_mod.load(ROOT / "matrix.yaml").rows if r.flash_attn}
    outputs = dict(line.split("=", 1) for line in out_file.read_text().splitlines())
    assert outputs["flash_attn_count"] == "0" and "registry" in {e["flash_attn_source"]
                                                                 for e in json.loads(outputs["matrix"])["include"]}
    # --bake asks nothing at all
    monkeypatch.setattr(flash_attn, "from_registry", lambda *a: pytest.fail("--bake asks no registry"))
    assert run("plan", "--bake").code == 0


# --- the job ------------------------------------------------------------------------------------------------------

def test_the_flash_attn_job_runs_after_plan_over_the_keys_to_compile_and_only_when_there_are_some():
    wf = workflow()
    plan_job = wf["jobs"]["plan"]
    assert plan_job["outputs"]["flash_attn"] == "${{ steps.plan.outputs.flash_attn }}"
    assert plan_job["outputs"]["flash_attn_count"] == "${{ steps.plan.outputs.flash_attn_count }}"
    job = wf["jobs"]["flash-attn"]
    assert _needs(job) == ["plan"]
    assert job["if"] == "needs.plan.outputs.flash_attn_count != '0'"
    assert job["strategy"] == {"fail-fast": False, "matrix": "${{ fromJSON(needs.plan.outputs.flash_attn) }}"}
    assert job["env"]["REGISTRY"] == "${{ needs.plan.outputs.registry }}"
    assert job["permissions"] == {"contents": "read", "packages": "write"}


def test_the_flash_attn_job_has_a_long_time_limit_with_its_measured_reason():
    job = workflow()["jobs"]["flash-attn"]
    assert 180 < job["timeout-minutes"] <= 360  # about 3 h on 2 cores; 360 min is a hosted job's ceiling
    text = WORKFLOW.read_text()
    block = text[text.index("\n  flash-attn:\n"):text.index("timeout-minutes: 360")]
    for figure in ("73 units", "1396 s on 16 cores", "290 core-seconds per unit", "3 h on a 2-core runner"):
        assert figure in block, figure


def test_the_flash_attn_job_compiles_with_build_py_and_pushes_only_with_credentials(tmp_path):
    """As in the build job: TRUSTED (no pull request from a fork) decides the login and the push."""
    job = workflow()["jobs"]["flash-attn"]
    login = [s for s in steps_of(job) if s.get("uses") == "./.github/actions/registry-login"]
    assert [s.get("if") for s in login] == ["env.TRUSTED == 'true'"]
    step = step_calling(job, "build.py flash-attn get")
    assert step["env"] == {"ROW": "${{ matrix.row }}"}
    steps = steps_of(job)
    assert steps.index(login[0]) < steps.index(step)
    for trusted in ("true", "false"):
        run_dir = tmp_path / trusted
        run_dir.mkdir()
        proc = run_script(step["run"], run_dir, {"TRUSTED": trusted, "ROW": "a-row", "REGISTRY": "ghcr.io/o"},
                          {"python": ""})
        assert proc.returncode == 0, proc.stderr
        [call] = calls(run_dir)
        words = call.split()[2:]  # after "python build.py"
        assert words[:6] == ["flash-attn", "get", "--row", "a-row", "--registry", "ghcr.io/o"]
        assert ("--no-push" in words) is (trusted == "false"), call
        assert words[words.index("--wheel-dir") + 1] == "flash-attn-mirror"
        args = cli.parser().parse_args(words)
        assert args.no_push is (trusted == "false")


def test_the_wheel_and_the_logs_of_each_key_are_kept_as_artifacts():
    job = workflow()["jobs"]["flash-attn"]
    uploads = {s["with"]["name"]: s for s in steps_of(job) if s.get("uses", "").startswith("actions/upload-artifact@")}
    assert uploads["flash-attn-wheel-${{ matrix.key }}"]["with"]["path"] == "flash-attn-mirror"
    logs = uploads["flash-attn-logs-${{ matrix.key }}"]
    assert logs["if"] == "always()" and logs["with"]["path"] == "build-logs/${{ matrix.row }}"


# --- the build jobs -----------------------------------------------------------------------------------------------

def test_build_jobs_need_the_flash_attn_job_and_still_run_when_it_was_skipped():
    jobs = workflow()["jobs"]
    build = jobs["build"]
    assert set(_needs(build)) == {"plan", "flash-attn"}
    condition = build["if"]
    assert "always()" not in condition
    body = condition.strip()
    assert body.startswith("${{") and body.endswith("}}")
    terms = [t.strip() for t in re.split(r"&&(?![^()]*\))", body[3:-2])]
    assert terms == ["!cancelled()", "needs.plan.result == 'success'", "needs.plan.outputs.count != '0'",
                     TOLERATES_SKIP]
    for name, job in jobs.items():
        assert "always()" not in str(job.get("if", "")), name


def test_a_row_build_never_compiles_flash_attn(tmp_path):
    """--no-flash-attn-compile always; without credentials the flash-attn job's artifact is a local mirror."""
    build = workflow()["jobs"]["build"]
    step = step_calling(build, "build.py build")
    assert "--no-flash-attn-compile" in step["run"]
    download = [s for s in steps_of(build) if s.get("uses", "").startswith("actions/download-artifact@")]
    assert len(download) == 1
    assert download[0]["if"] == "env.TRUSTED != 'true' && matrix.flash_attn_source == 'compile'"
    assert download[0]["with"] == {"name": "flash-attn-wheel-${{ matrix.flash_attn_key }}", "path": "flash-attn-mirror"}
    steps = steps_of(build)
    assert steps.index(download[0]) < steps.index(step)
    for with_mirror in (False, True):
        run_dir = tmp_path / str(with_mirror)
        run_dir.mkdir()
        if with_mirror:
            (run_dir / "flash-attn-mirror").mkdir()
        proc = run_script(step["run"], run_dir, {"TRUSTED": "false", "ROW": "a-row", "REGISTRY": "ghcr.io/o"},
                          {"python": ""})
        assert proc.returncode == 0, proc.stderr
        [call] = calls(run_dir)
        words = call.split()[2:]
        assert "--no-flash-attn-compile" in words
        if with_mirror:
            assert words[words.index("--flash-attn-mirror") + 1] == f"file://{run_dir}/flash-attn-mirror"
        else:
            assert "--flash-attn-mirror" not in words
        cli.parser().parse_args(words)


# --- `flash-attn get`: --no-push, --wheel-dir, a push that did not land ------------------------------------------

def test_export_lays_a_wheel_out_as_a_mirror_reads_it(tmp_path):
    row = next(r for r in matrix_mod.load(ROOT / "matrix.yaml").rows if r.flash_attn == "2.8.3")
    name = wheel_spec(row).filename
    wheel_file = tmp_path / "compiled" / name
    wheel_file.parent.mkdir()
    wheel_file.write_bytes(b"wheel")
    wheel = flash_attn.Wheel("r/flash-attn-wheels:k", name, "0" * 64, "compiled", file=wheel_file)
    copied = flash_attn.export(wheel, wheel_spec(row), tmp_path / "mirror")
    url = wheel_spec(row).url(f"file://{tmp_path / 'mirror'}")
    assert copied and copied.read_bytes() == b"wheel" and url == f"file://{copied}"
    assert flash_attn.export(dataclasses.replace(wheel, file=None), wheel_spec(row), tmp_path / "other") is None


@pytest.fixture
def fake_get(monkeypatch, tmp_path):
    """`flash-attn get` with its work replaced: no daemon, no base image, ensure() hands back a local wheel."""
    from imagematrix.stages import flash_attn_store

    row = next(r for r in matrix_mod.load(ROOT / "matrix.yaml").rows if r.flash_attn == "2.8.3")
    name = wheel_spec(row).filename
    wheel_file = tmp_path / "wheels" / name
    wheel_file.parent.mkdir()
    wheel_file.write_bytes(b"wheel")
    seen = {}

    def ensure(row, **kwargs):
        seen.update(kwargs)
        return flash_attn.Wheel(f"{kwargs['registry']}/flash-attn-wheels:k", name, "0" * 64, "compiled",
                                file=wheel_file)

    monkeypatch.setattr(flash_attn_store.docker, "require_daemon", lambda: None)
    monkeypatch.setattr(flash_attn_store.generated, "read", lambda *a, **k: [])
    monkeypatch.setattr(flash_attn_store.builder, "ensure_base", lambda *a: "base")
    monkeypatch.setattr(flash_attn, "ensure", ensure)
    return row, seen


def test_get_no_push_pushes_nothing_and_copies_the_wheel_for_an_artifact(run, tmp_path, fake_get, monkeypatch):
    row, seen = fake_get
    monkeypatch.setattr(flash_attn, "from_registry", lambda *a: pytest.fail("--no-push reads no registry"))
    result = run("flash-attn", "get", "--row", row.id, "--registry", "r.example/o", "--no-push",
                 "--wheel-dir", tmp_path / "mirror", "--log-dir", tmp_path / "logs")
    assert result.code == 0, result
    assert seen["push"] is False
    assert [p.relative_to(tmp_path / "mirror").parts[0] for p in (tmp_path / "mirror").rglob("*.whl")] == [
        f"v{row.flash_attn}"]


def test_get_fails_when_its_push_did_not_reach_the_registry(run, tmp_path, fake_get, monkeypatch):
    row, seen = fake_get
    monkeypatch.setattr(flash_attn, "from_registry", lambda *a: (None, "r.example/o/flash-attn-wheels:k does not exist"))
    result = run("flash-attn", "get", "--row", row.id, "--registry", "r.example/o", "--log-dir", tmp_path / "logs")
    assert result.code == 1 and seen["push"] is True
    assert "is not in the registry after the push" in result.err


def test_get_only_options_are_refused_elsewhere(run):
    row = next(r for r in matrix_mod.load(ROOT / "matrix.yaml").rows if r.flash_attn == "2.8.3")
    result = run("flash-attn", "show", "--row", row.id, "--no-push")
    assert result.code == 2 and "options of `flash-attn get`" in result.err


# --- issue 27: `ensure` ran twice in CI; the build takes the flash-attn job's wheel as the plan names it ----------

def test_the_plan_names_the_wheel_image_a_build_takes_without_searching():
    planned = _planned()
    for p, entry in zip(planned, plan.github_matrix(planned)["include"], strict=True):
        source = p.flash_attn[0] if p.flash_attn else ""
        if source in ("registry", "compile"):
            assert entry["flash_attn_wheel"] == f"127.0.0.1:5000/imagematrix/flash-attn-wheels:{wheel_spec(p.row).key}"
        else:
            assert entry["flash_attn_wheel"] == "", (p.row.id, source)
    assert any(e["flash_attn_wheel"] for e in plan.github_matrix(planned)["include"])


def test_a_trusted_build_takes_the_planned_wheel_image_and_searches_nothing(tmp_path):
    step = step_calling(workflow()["jobs"]["build"], "build.py build")
    assert step["env"]["FLASH_ATTN_WHEEL"] == "${{ matrix.flash_attn_wheel }}"
    ref = "ghcr.io/o/flash-attn-wheels:2.8.3-cu130-torch2.11.0-cp312-cxx11abiTRUE-sm90"
    for trusted, wheel, passed in (("true", ref, True), ("true", "", False), ("false", ref, False)):
        run_dir = tmp_path / f"{trusted}-{bool(wheel)}"
        run_dir.mkdir()
        proc = run_script(step["run"], run_dir, {"TRUSTED": trusted, "ROW": "a-row", "REGISTRY": "ghcr.io/o",
                                                 "FLASH_ATTN_WHEEL": wheel}, {"python": ""})
        assert proc.returncode == 0, proc.stderr
        [call] = calls(run_dir)
        words = call.split()[2:]
        assert ("--flash-attn-wheel" in words) is passed, call
        args = cli.parser().parse_args(words)
        assert args.flash_attn_wheel == (ref if passed else None)
