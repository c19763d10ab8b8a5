"""Issue 27, item 3: the build as explicit steps. A request object, one row walking check -> base -> flash-attn ->
build -> smoke -> size -> coverage -> push -> attest, each step reported to a Progress; one push route; smoke once per
image; render's output taken as it is. Every stage's work is replaced here: what is checked is the walk itself."""

from __future__ import annotations

import dataclasses
import io
import json

import pytest
from rich.console import Console

from imagematrix.cli import build as build_cli
from imagematrix.knowledge.flash_attn import wheel_spec
from imagematrix.model import labels
from imagematrix.model import matrix as matrix_mod
from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.stages import (
    attest,
    builder,
    coverage_image,
    coverage_row,
    flash_attn,
    generated,
    pipeline,
    publish,
    render,
    sizes,
    smoke,
    steps,
)
from imagematrix.stages.coverage_image import FileCoverage, ImageScan
from imagematrix.stages.publish import Outcome
from imagematrix.tools import cuobjdump
from tests.conftest import ROOT

ROW1 = "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311"
CHECK_IMAGE = coverage_row.check_image  # the real one, for the tests of the coverage step
SP = "/opt/venv/lib/python3.11/site-packages"
CU124 = ("sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90")


def scanned(**archs) -> ImageScan:
    """An image's device code as the coverage step reads it: torch, vLLM's _C and its flash-attn, cuBLAS and NCCL,
    each file with CU124's SASS unless given (library=(sass, ...))."""
    files = {"torch": "torch/lib/libtorch_cuda.so", "vllm": "vllm/_C.abi3.so",
             "vllm_fa": "vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so", "cublas": "nvidia/cublas/lib/libcublas.so.12",
             "nccl": "nvidia/nccl/lib/libnccl.so.2"}
    return ImageScan("candidate", {f"{SP}/{path}": FileCoverage("0" * 64, 1, "so", tuple(archs.get(name, CU124)), ())
                                   for name, path in files.items()}, {}, 3, 0, 1.0)


class Recorder:
    """A pipeline.Progress that keeps what it is told."""

    def __init__(self):
        self.events = []

    def note(self, message):
        self.events.append(("note", message))

    def row_started(self, row_id, index, total):
        self.events.append(("row", row_id))

    def step(self, row_id, name):
        self.events.append(("step", name))

    def say(self, row_id, message):
        self.events.append(("say", message))

    def row_done(self, outcome):
        self.events.append(("done", outcome.status))

    def steps(self):
        return [name for kind, name in self.events if kind == "step"]


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """Every stage's work replaced; `calls` records what was done, `remote` is what the registry holds."""
    calls, remote = [], {}
    monkeypatch.setattr(publish, "remote_labels", lambda registry, tag: remote.get(tag))
    monkeypatch.setattr(steps.docker, "cli", lambda: "docker")
    monkeypatch.setattr(steps.docker, "run", lambda *a, **k: calls.append(("docker",) + a))
    monkeypatch.setattr(builder, "ensure_base", lambda row, inputs, log, registry, platform: calls.append(("base",)) or "base")
    monkeypatch.setattr(builder, "build", lambda item, candidate, *a, **k: calls.append(("build", candidate, k)))
    monkeypatch.setattr(smoke, "run_once", lambda m, row, image, log, platform: calls.append(("smoke", image)) or (True, None))
    verdict = sizes.Verdict("pass", "within the margin")
    monkeypatch.setattr(sizes, "check_image", lambda *a, **k: calls.append(("size",)) or (verdict, None))
    monkeypatch.setattr(sizes, "record_note", lambda m, v, measured, write_it: f"size: noted ({write_it})")
    monkeypatch.setattr(publish, "push", lambda row, image, ref: calls.append(("push", image, ref)) or "sha256:" + "a" * 64)
    monkeypatch.setattr(publish, "write_manifest", lambda image, pushed, path: calls.append(("manifest", image)))
    monkeypatch.setattr(attest, "for_build", lambda row, ref, logs, **k: calls.append(("attest", ref)) or ("s", "p"))
    monkeypatch.setattr(pipeline.RowJob, "lock_text", lambda self: "lock")
    monkeypatch.setattr(cuobjdump, "find", lambda: "cuobjdump")
    monkeypatch.setattr(steps.host, "emulation_missing", lambda platform: None)  # arm64 emulated (no qemu run here)
    row = matrix_mod.load(ROOT / "matrix.yaml").select([ROW1])[0]
    as_before = coverage_row.Outcome(coverage_row.Check("pass", "coverage as in the baseline"),
                                     coverage_row.make_baseline(row, scanned()), None)
    monkeypatch.setattr(coverage_row, "check_image",
                        lambda row, image, root, **k: calls.append(("coverage", image, k)) or as_before)
    return calls, remote


def request(tmp_path, **kw) -> pipeline.BuildRequest:
    return pipeline.BuildRequest(matrix=matrix_mod.load(ROOT / "matrix.yaml"), registry="r.example/o",
                                 log_dir=tmp_path, **kw)


def item(row_id: str = ROW1):
    m = matrix_mod.load(ROOT / "matrix.yaml")
    return generated.read(m, m.select([row_id]))[0]


def test_a_row_walks_every_step_in_order_and_is_pushed_by_the_one_route(fake, tmp_path):
    calls, _ = fake
    progress = Recorder()
    it = item()
    outcome = pipeline.run_row(request(tmp_path), it, [ROW1, "vllm0.7.2"], progress)
    assert progress.steps() == ["check", "base", "build", "smoke", "size", "coverage", "push", "attest"]
    candidate = f"r.example/o/verl:candidate-{ROW1}-{it.context_digest()[7:19]}"
    assert [c for c in calls if c[0] == "push"] == [("push", candidate, f"r.example/o/verl:{ROW1}"),
                                                    ("push", candidate, "r.example/o/verl:vllm0.7.2")]
    assert [c[0] for c in calls].count("smoke") == 1
    assert ("attest", f"r.example/o/verl@sha256:{'a' * 64}") in calls
    assert ("docker", "rmi", candidate) in calls
    assert outcome.status == "pushed" and outcome.stage == ""  # no "pushed at attest"
    assert outcome.detail.splitlines()[0] == f"r.example/o/verl:{ROW1}, r.example/o/verl:vllm0.7.2 sha256:{'a' * 64}"


@pytest.mark.parametrize("push, pushed", [("candidate", True), ("none", False)])
def test_candidate_and_none_go_the_same_route(fake, tmp_path, push, pushed):
    calls, _ = fake
    progress = Recorder()
    outcome = pipeline.run_row(request(tmp_path, push=push), item(), [ROW1], progress)
    pushes = [c for c in calls if c[0] == "push"]
    assert len(pushes) == int(pushed) and all(":candidate-" in c[2] for c in pushes)
    assert outcome.status == ("pushed" if pushed else "tested")
    assert ("attest" in progress.steps()) is pushed
    assert not any(c[:2] == ("docker", "rmi") for c in calls)


def test_a_row_the_registry_has_is_skipped_at_check_and_its_alias_tagged(fake, tmp_path, monkeypatch):
    calls, remote = fake
    it = item()
    remote[ROW1] = {labels.INPUT_DIGEST: it.context_digest()}
    retagged = []
    monkeypatch.setattr(steps.registry_api, "retag", lambda repo, source, alias: retagged.append(alias))
    progress = Recorder()
    outcome = pipeline.run_row(request(tmp_path), it, [ROW1, "vllm0.7.2"], progress)
    assert (outcome.status, outcome.stage) == ("skipped", "check") and "tagged vllm0.7.2" in outcome.detail
    assert progress.steps() == ["check"] and retagged == ["vllm0.7.2"] and not calls


def test_failing_smoke_tests_stop_the_row_before_size_and_push(fake, tmp_path, monkeypatch):
    calls, _ = fake
    monkeypatch.setattr(smoke, "run_once", lambda *a: (False, None))
    progress = Recorder()
    outcome = pipeline.run_row(request(tmp_path), item(), [ROW1], progress)
    assert (outcome.status, outcome.stage) == ("failed", "smoke") and "nothing pushed" in outcome.detail
    assert progress.steps()[-1] == "smoke" and not [c for c in calls if c[0] in ("size", "push")]


def test_a_step_failure_names_its_step_and_writes_error_txt(fake, tmp_path, monkeypatch):
    def broken(*a, **k):
        raise RuntimeFailure(f"row {ROW1}, stage build: BuildKit build failed")

    monkeypatch.setattr(builder, "build", broken)
    outcome = pipeline.run_row(request(tmp_path), item(), [ROW1], Recorder())
    assert (outcome.status, outcome.stage) == ("failed", "build")
    assert "BuildKit build failed" in (tmp_path / ROW1 / "error.txt").read_text()


def test_a_named_wheel_image_is_taken_without_any_search(fake, tmp_path, monkeypatch):
    calls, _ = fake
    m = matrix_mod.load(ROOT / "matrix.yaml")
    row = next(r for r in m.rows if r.flash_attn == "2.8.3")
    ref = f"r.example/o/flash-attn-wheels:{wheel_spec(row).key}"
    monkeypatch.setattr(flash_attn, "ensure", lambda *a, **k: pytest.fail("a named wheel is not searched for"))
    monkeypatch.setattr(flash_attn.registry_api, "labels", lambda repo, tag: {
        labels.FLASH_ATTN_SHA256: "0" * 64, labels.FLASH_ATTN_FILE: "w.whl", labels.FLASH_ATTN_ORIGIN: "compiled"})
    progress = Recorder()
    outcome = pipeline.run_row(request(tmp_path, flash_attn=flash_attn.Sources(wheel=ref)), item(row.id), [row.id],
                               progress)
    assert outcome.status == "pushed" and "flash-attn" in progress.steps()
    build = next(c for c in calls if c[0] == "build")
    assert build[2]["build_args"]["FLASH_ATTN_WHEELS"] == ref
    other = pipeline.run_row(request(tmp_path, flash_attn=flash_attn.Sources(wheel=ref + "x")), item(row.id),
                             [row.id], Recorder())
    assert (other.status, other.stage) == ("failed", "flash-attn") and wheel_spec(row).key in other.detail


# --- the coverage step (issue 28): the image's device code against its baseline, before the push -----------------

def test_coverage_reads_the_candidate_after_the_size_check_and_before_any_push(fake, tmp_path):
    calls, _ = fake
    it = item()
    pipeline.run_row(request(tmp_path), it, [ROW1], Recorder())
    order = [c[0] for c in calls]
    assert order.index("size") < order.index("coverage") < order.index("push")
    coverage = next(c for c in calls if c[0] == "coverage")
    assert coverage[1] == f"r.example/o/verl:candidate-{ROW1}-{it.context_digest()[7:19]}"
    assert coverage[2]["daemon"] is True and coverage[2]["write_baseline"] is False  # written after the push only
    assert steps.STEPS[[s.name for s in steps.STEPS].index("coverage") + 1].name == "push"


def _with_real_coverage(monkeypatch, project_copy, scan: ImageScan):
    monkeypatch.setattr(coverage_row, "check_image", CHECK_IMAGE)
    monkeypatch.setattr(coverage_image, "scan", lambda ref, daemon=False: scan)
    m = matrix_mod.load(project_copy)
    return m, coverage_row.baseline_path(m.root, ROW1)


def test_a_lost_architecture_fails_the_coverage_step_naming_library_and_arch_and_nothing_is_pushed(
        fake, tmp_path, monkeypatch, project_copy):
    calls, _ = fake
    m, baseline = _with_real_coverage(monkeypatch, project_copy, scanned(vllm=("sm_80", "sm_86", "sm_90")))
    coverage_row.write(baseline, coverage_row.make_baseline(m.select([ROW1])[0], scanned()))
    before = baseline.read_text()
    logs = tmp_path / "logs"
    outcome = pipeline.run_row(pipeline.BuildRequest(matrix=m, registry="r.example/o", log_dir=logs), item(), [ROW1],
                               Recorder())
    assert (outcome.status, outcome.stage) == ("failed", "coverage")
    assert "vllm on sm_70: native -> none" in outcome.detail and "vllm on sm_75: native -> none" in outcome.detail
    assert "nothing pushed" in outcome.detail and "--record-coverage" in outcome.detail
    assert not [c for c in calls if c[0] in ("push", "manifest", "attest")]
    assert baseline.read_text() == before  # the baseline stays as it was
    assert "vllm on sm_70" in (logs / ROW1 / "error.txt").read_text()
    assert coverage_row.from_json((logs / ROW1 / "coverage.json").read_text(), "scan").verdicts["7.0"]["lacking"] == ["vllm"]
    again = pipeline.run_row(pipeline.BuildRequest(matrix=m, registry="r.example/o", log_dir=logs,
                                                   record_coverage=True), item(), [ROW1], Recorder())
    assert again.status == "pushed" and "re-recorded on request" in again.detail
    assert coverage_row.load(baseline).verdicts["7.0"]["lacking"] == ["vllm"]  # the intended loss, recorded


def test_a_pushed_row_without_a_baseline_records_it_and_its_manifest_carries_the_verdict(
        fake, tmp_path, monkeypatch, project_copy):
    m, baseline = _with_real_coverage(monkeypatch, project_copy, scanned())
    logs = tmp_path / "logs"
    unpushed = pipeline.run_row(pipeline.BuildRequest(matrix=m, registry="r.example/o", log_dir=logs, push="none"),
                                item(), [ROW1], Recorder())
    assert unpushed.status == "tested" and "not recorded, nothing was pushed" in unpushed.detail
    assert not baseline.exists()
    manifest = json.loads((logs / ROW1 / "manifest.json").read_text())
    assert manifest["coverage"]["8.0"] == "native" and manifest["coverage"]["12.0"] == "none"
    assert manifest["driver_minimum"] == "525.60.13"
    pushed = pipeline.run_row(pipeline.BuildRequest(matrix=m, registry="r.example/o", log_dir=logs), item(), [ROW1],
                              Recorder())
    assert pushed.status == "pushed" and f"coverage: no coverage baseline for {ROW1} yet" in pushed.detail
    assert coverage_row.load(baseline).verdicts["9.0"]["verdict"] == "native"


def test_a_declared_gpu_the_binaries_do_not_cover_fails_the_coverage_step_and_nothing_is_pushed(
        fake, tmp_path, monkeypatch, project_copy):
    calls, _ = fake
    m, _ = _with_real_coverage(monkeypatch, project_copy, scanned())  # no baseline: it would be recorded
    it = item()
    declaring = render.Rendered(dataclasses.replace(it.row, gpus=("H100", "A100"), gpus_jit=("B200",)), it.files)
    outcome = pipeline.run_row(pipeline.BuildRequest(matrix=m, registry="r.example/o", log_dir=tmp_path), declaring,
                               [ROW1], Recorder())
    assert (outcome.status, outcome.stage) == ("failed", "coverage")
    assert "B200 (sm_100, row key gpus_jit): no sm_100 kernel (SASS or PTX) in" in outcome.detail
    assert "H100" not in outcome.detail and "nothing pushed" in outcome.detail
    assert not [c for c in calls if c[0] in ("push", "manifest", "attest")]
    assert not coverage_row.baseline_path(m.root, ROW1).exists()
    covered = render.Rendered(dataclasses.replace(it.row, gpus=("H100", "A100", "T4")), it.files)
    assert pipeline.run_row(pipeline.BuildRequest(matrix=m, registry="r.example/o", log_dir=tmp_path), covered,
                            [ROW1], Recorder()).status == "pushed"


def test_the_verdict_goes_into_the_provenance_of_the_pushed_digest(fake, tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(attest, "for_build", lambda row, ref, logs, **k: seen.update(k) or ("s", "p"))
    assert pipeline.run_row(request(tmp_path), item(), [ROW1], Recorder()).status == "pushed"
    assert seen["coverage"]["name"] == coverage_row.COVERAGE_BYPRODUCT
    assert seen["coverage"]["annotations"]["coverage"]["9.0"] == "native"


def test_a_build_without_cuobjdump_fails_before_any_work(fake, tmp_path, monkeypatch):
    calls, _ = fake
    monkeypatch.setattr(cuobjdump, "find", lambda: None)
    outcome = pipeline.run_row(request(tmp_path), item(), [ROW1], Recorder())
    assert (outcome.status, outcome.stage) == ("failed", "base")
    assert "cuobjdump is not installed" in outcome.detail and "pip install nvidia-cuda-cuobjdump" in outcome.detail
    assert not calls


def test_the_request_refuses_an_unknown_push_mode(tmp_path):
    with pytest.raises(ValueError):
        request(tmp_path, push="sometimes")


# --- render's output, taken as it is -----------------------------------------------------------------------------

def test_a_stale_context_is_refused_by_reading_with_the_fix(project_copy, run):
    assert run("render", "--matrix", project_copy).code == 0
    m = matrix_mod.load(project_copy)
    row = m.select([ROW1])[0]
    assert [i.row.id for i in generated.read(m, [row])] == [ROW1]
    lock = project_copy.parent / "locks" / f"{ROW1}.txt"
    text = lock.read_text()
    lock.write_text(text + "\n")  # the lock changed after render
    with pytest.raises(InputError) as stale:
        generated.read(m, [row])
    assert "rendered from other inputs" in str(stale.value) and "python build.py render" in stale.value.render()
    lock.write_text(text)
    generated.read(m, [row])
    dockerfile = project_copy.parent / "dockerfiles" / "generated" / ROW1 / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "# edited\n")
    with pytest.raises(InputError, match="changed after render"):
        generated.read(m, [row])
    (project_copy.parent / "dockerfiles" / "generated" / f"{ROW1}.inputs").unlink()
    with pytest.raises(InputError, match="inputs: missing"):
        generated.read(m, [row])
    check = run("render", "--matrix", project_copy, "--check")
    assert check.code == 1 and f"{ROW1}.inputs: missing" in check.err


# --- the console ---------------------------------------------------------------------------------------------------

def test_buildkit_export_lines_reach_the_progress(monkeypatch, tmp_path):
    seen = []

    def run_logged(cmd, log_path, env=None, on_line=None):
        for line in ("#21 [image 9/9] COPY entrypoint.sh /usr/local/bin/", "#22 exporting to image",
                     "#22 exporting layers 64.3s done", "#22 DONE 65.0s"):
            on_line(line)
        return 0

    monkeypatch.setattr(builder.docker, "cli", lambda: "docker")
    monkeypatch.setattr(builder.docker, "has_buildx", lambda cli: False)
    monkeypatch.setattr(builder.docker, "run_logged", run_logged)
    builder.build(item(), "c:t", tmp_path, {}, tmp_path / "build.log", seen.append)
    assert seen == ["[image 9/9] COPY entrypoint.sh /usr/local/bin/", "exporting to image",
                    "exporting layers 64.3s done"]


@pytest.mark.parametrize("width", [80, 160])
def test_the_summary_shows_the_whole_pushed_reference_at_any_width(monkeypatch, width):
    console = Console(file=io.StringIO(), width=width, highlight=False)
    monkeypatch.setattr(build_cli, "out", console)
    reference = f"registry.example.com/some/namespace/verl:{ROW1}, registry.example.com/some/namespace/verl:vllm0.7.2"
    digest = "sha256:" + "b" * 64
    build_cli.summary([Outcome(ROW1, "pushed", "", 812.0, f"{reference} {digest}\nsize: recorded")])
    text = console.file.getvalue()
    assert f"{reference} {digest}" in text.replace("\n", "") and f"{reference} {digest}" in text
    assert "attest" not in text


def test_the_console_progress_times_each_step_and_names_the_true_one(monkeypatch):
    console = Console(file=io.StringIO(), width=160, force_terminal=False, highlight=False)
    with build_cli.ConsoleProgress(console) as progress:
        progress.row_started(ROW1, 1, 1)
        for name in ("check", "base", "build"):
            progress.step(ROW1, name)
            progress.say(ROW1, "[image 9/9] COPY entrypoint.sh" if name == "build" else f"doing {name}")
        progress.say(ROW1, "exporting layers")
        progress.row_done(Outcome(ROW1, "failed", "build", 3.0, "BuildKit build failed"))
    text = console.file.getvalue()
    assert f"[1/1] {ROW1}: base" in text and f"[1/1] {ROW1}: doing base" in text
    assert "COPY entrypoint.sh" not in text and "exporting layers" not in text  # BuildKit's lines stay in build.log
    assert f"{ROW1}: failed at build in 3 s (check 0 s, base 0 s, build 0 s)" in text


# --- issue 29: a row with linux/amd64 and linux/arm64 is one tag, a multi-arch index ----------------------------------

def multi_items():
    import dataclasses

    from imagematrix.stages.render import Rendered

    amd64 = item()
    row = dataclasses.replace(amd64.row, platforms=("linux/amd64", "linux/arm64"))
    arm64_files = {**amd64.files, "row.json": amd64.files["row.json"].replace(b'"id"', b'"platform": "linux/arm64", "id"')}
    return [Rendered(row=row, files=amd64.files), Rendered(row=row, files=arm64_files, platform="linux/arm64")]


@pytest.fixture
def index_registry(monkeypatch):
    held = {}  # tag -> {platform: labels}

    def put(repo, tag_list, images):
        for tag in tag_list:
            held[tag] = {"images": images}
        return "sha256:" + "b" * 64

    monkeypatch.setattr(steps.registry_api, "platform_state", lambda repo, tag: None)
    monkeypatch.setattr(steps.registry_api, "put_index", put)
    return held


def test_a_multi_platform_row_builds_and_smokes_each_platform_then_pushes_one_index(fake, tmp_path, index_registry):
    calls, _ = fake
    progress = Recorder()
    items = multi_items()
    outcome = pipeline.run_multi(request(tmp_path), items, [ROW1, "vllm0.7.2"], progress)
    assert progress.steps() == ["check", "base", "build", "smoke", "size", "coverage", "base (linux/arm64)",
                                "build (linux/arm64)", "smoke (linux/arm64)", "size (linux/arm64)", "push", "attest"]
    candidates = [f"r.example/o/verl:candidate-{ROW1}-{it.context_digest()[7:19]}" for it in items]
    assert candidates[0] != candidates[1]  # each platform's image has its own input digest
    assert [c for c in calls if c[0] == "push"] == [("push", c, c) for c in candidates]
    assert index_registry[ROW1]["images"] == [("linux/amd64", "sha256:" + "a" * 64), ("linux/arm64", "sha256:" + "a" * 64)]
    assert "vllm0.7.2" in index_registry
    assert [c[1] for c in calls if c[0] == "attest"] == [f"r.example/o/verl@sha256:{'a' * 64}"] * 2
    assert (tmp_path / ROW1 / "linux-arm64").is_dir()  # the arm64 image's logs beside amd64's
    assert outcome.status == "pushed" and f"sha256:{'b' * 64}" in outcome.detail
    assert "linux/arm64: size: noted (True)" in outcome.detail


def test_a_multi_platform_row_whose_index_is_current_is_skipped(fake, tmp_path, index_registry, monkeypatch):
    calls, _ = fake
    items = multi_items()
    current = {it.platform: {"io.imagematrix.input-digest": it.context_digest()} for it in items}
    monkeypatch.setattr(steps.registry_api, "platform_state", lambda repo, tag: ("sha256:" + "b" * 64, current))
    monkeypatch.setattr(steps.registry_api, "digest", lambda repo, tag: "sha256:" + "b" * 64)
    outcome = pipeline.run_multi(request(tmp_path), items, [ROW1, "vllm0.7.2"], Recorder())
    assert outcome.status == "skipped" and "linux/arm64" in outcome.detail
    assert not [c for c in calls if c[0] in ("build", "push")]
    stale = {**current, "linux/arm64": {"io.imagematrix.input-digest": "sha256:" + "0" * 64}}
    monkeypatch.setattr(steps.registry_api, "platform_state", lambda repo, tag: ("sha256:" + "b" * 64, stale))
    assert pipeline.run_multi(request(tmp_path), items, [ROW1], Recorder()).status == "pushed"


def test_a_failing_arm64_smoke_test_pushes_nothing(fake, tmp_path, index_registry, monkeypatch):
    calls, _ = fake
    monkeypatch.setattr(smoke, "run_once", lambda m, row, image, log, platform: (platform == "linux/amd64", None))
    outcome = pipeline.run_multi(request(tmp_path), multi_items(), [ROW1], Recorder())
    assert outcome.status == "failed" and outcome.stage == "smoke (linux/arm64)"
    assert not [c for c in calls if c[0] == "push"] and not index_registry


def test_an_arm64_image_without_emulation_fails_at_build_before_buildkit(fake, tmp_path, index_registry, monkeypatch):
    calls, _ = fake
    monkeypatch.setattr(steps.host, "native_platform", lambda: "linux/amd64")
    monkeypatch.setattr(steps.host, "emulation_missing",
                        lambda platform: f"{platform}: /proc/sys/fs/binfmt_misc/qemu-aarch64 runs qemu 7.2 (...)")
    outcome = pipeline.run_multi(request(tmp_path), multi_items(), [ROW1], Recorder())
    assert outcome.status == "failed" and outcome.stage == "build (linux/arm64)", outcome
    assert "linux/arm64: /proc/sys/fs/binfmt_misc/qemu-aarch64 runs qemu 7.2" in outcome.detail, outcome
    assert len([c for c in calls if c[0] == "build"]) == 1  # amd64's only: BuildKit never ran for arm64
    assert not [c for c in calls if c[0] == "push"] and not index_registry
