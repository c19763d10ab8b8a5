"""gpu-record: a run's raw results -> a record; docs/gpu-runs.md from records. The raw results here are the
committed H200 run's own files where they exist (imagematrix/suites/gpu/run_host.sh's outputs), else made up in the test."""

from __future__ import annotations

import json

import pytest

from imagematrix.model import gpurun
from imagematrix.model import matrix as matrix_mod
from imagematrix.model.errors import InputError
from imagematrix.stages import gpu_docs, gpu_record
from tests.conftest import ROOT

ROW = "verl0.9.1-vllm0.24.0-torch2.11.0-cu130-py312"
JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="test_gpu_cuda" name="test_torch_sees_a_gpu" time="4.5"/>
<testcase classname="test_gpu_multi" name="test_nccl" time="0.001"><skipped message="needs 2 or more GPUs; 1 visible"/></testcase>
<testcase classname="test_gpu_verl" name="test_path" time="23.2"><failure message="ModuleNotFoundError: no x&#10;more">tb</failure></testcase>
</testsuite></testsuites>"""


@pytest.fixture
def raw(tmp_path):
    (tmp_path / "junit.xml").write_text(JUNIT)
    (tmp_path / "gpu.csv").write_text("NVIDIA H200, 580.159.04, 143771 MiB, 9.0\n")
    (tmp_path / "env.json").write_text(json.dumps({"row": ROW, "python": "3.12.3", "torch_cuda": "13.0",
                                                   "versions": {"torch": "2.11.0+cu130", "vllm": "0.24.0"}}))
    (tmp_path / "pytest.log").write_text("vLLM 0.24.0 (eager, dtype bfloat16): generated [[1, 2], [3, 4]]\n")
    (tmp_path / "verl_train.json").write_text(json.dumps({
        "passed": True, "wall_s": 314.2, "attn_implementation": "sdpa",
        "metrics": {"pg_loss": {"1": 0.0}}, "steps": {"1": {"training/rollout_actor_probs_pearson_corr": 0.99998}}}))
    return tmp_path


def test_a_record_carries_outcomes_gpu_versions_and_numbers(raw):
    m = matrix_mod.load(ROOT / "matrix.yaml")
    run = gpu_record.record(m, m.select([ROW])[0], raw, "2026-12-02", "host", "note")
    assert [(t.name, t.outcome) for t in run.tests] == [
        ("test_gpu_cuda::test_torch_sees_a_gpu", "passed"), ("test_gpu_multi::test_nccl", "skipped"),
        ("test_gpu_verl::test_path", "failed")]
    assert run.tests[2].detail == "ModuleNotFoundError: no x" and run.tests[1].detail.startswith("needs 2")
    assert (run.gpu, run.driver, run.capability, run.gpus) == ("NVIDIA H200", "580.159.04", "9.0", 1)
    assert run.numbers["vllm_eager_token_ids"] == [[1, 2], [3, 4]]
    assert run.numbers["verl_weight_sync"]["1"]["training/rollout_actor_probs_pearson_corr"] == 0.99998
    assert run.wheels is None  # no host-versions.json: the record says nothing about wheels
    assert len(run.lock_sha256) == 64 and not run.passed


def test_a_record_of_another_row_is_refused(raw):
    m = matrix_mod.load(ROOT / "matrix.yaml")
    with pytest.raises(InputError, match="holds a run of row"):
        gpu_record.record(m, m.rows[0], raw, "2026-12-02", "host")


def test_missing_raw_files_are_bad_input(tmp_path):
    m = matrix_mod.load(ROOT / "matrix.yaml")
    with pytest.raises(InputError, match="junit.xml is missing"):
        gpu_record.record(m, m.select([ROW])[0], tmp_path, "2026-12-02", "host")


def test_records_are_numbered_not_overwritten(raw, tmp_path):
    m = matrix_mod.load(ROOT / "matrix.yaml")
    run = gpu_record.record(m, m.select([ROW])[0], raw, "2026-12-02", "host")
    out = tmp_path / "records"
    out.mkdir()
    first, second = gpu_record.write(run, out), gpu_record.write(run, out)
    assert (first.name, second.name) == (f"2026-12-02-{ROW}-1.json", f"2026-12-02-{ROW}-2.json")


def test_the_page_lists_every_row_and_says_which_never_ran(raw):
    m = matrix_mod.load(ROOT / "matrix.yaml")
    run = gpu_record.record(m, m.select([ROW])[0], raw, "2026-12-02", "host")
    page = gpu_docs.page(m, [run])
    for row in m.rows:
        assert f"`{row.id}`" in page
    assert page.count("| never run on a GPU |") == len(m.rows) - 1
    assert "| test_gpu_verl::test_path | failed | 23.2 | ModuleNotFoundError: no x |" in page  # text, escaped
    assert gpurun.summary([run]) in page


def test_host_packages_at_another_version_than_the_lock_are_named_in_the_record_and_the_page(raw):
    """A host-mode run that leaves a locked package to a host with another version says so (the vLLM 0.31.0 row's
    run on the H200 kept the host's nvidia-cublas 13.1.0.3, locked 13.1.1.3)."""
    (raw / "host-versions.json").write_text(json.dumps({"packages": [
        {"name": "torch", "version": "2.11.0+cu130", "locked": "2.11.0", "match_ignoring_local": True},
        {"name": "nvidia-cublas", "version": "13.1.0.3", "locked": "13.1.1.3", "match_ignoring_local": False}],
        "missing": []}))
    m = matrix_mod.load(ROOT / "matrix.yaml")
    run = gpu_record.record(m, m.select([ROW])[0], raw, "2026-12-02", "host")
    assert run.wheels.from_host_same_version == ["torch"]
    assert run.wheels.from_host_other_version == ["nvidia-cublas 13.1.0.3 (locked 13.1.1.3)"]
    assert "another version than the lock's (nvidia-cublas 13.1.0.3 (locked 13.1.1.3))" in "\n".join(
        gpu_docs._record(run))


DIGEST = "sha256:" + "ab" * 32


def test_an_image_mode_record_names_the_image_and_says_whether_the_registry_still_serves_it(raw):
    m = matrix_mod.load(ROOT / "matrix.yaml")
    (raw / "image.json").write_text(json.dumps({"image": "127.0.0.1:5000/imagematrix/verl:x", "manifest_digest": DIGEST}))
    run = gpu_record.record(m, m.select([ROW])[0], raw, "2026-12-07", "image")
    assert run.mode == "image" and run.image.manifest_digest == DIGEST
    assert "image sha256:abababababab" in gpurun.summary([run])
    assert "(the one the registry serves today)" in gpurun.summary([run], served=DIGEST)
    assert "(not the one the registry serves today)" in gpurun.summary([run], served="sha256:" + "cd" * 32)
    page = gpu_docs.page(m, [run], {ROW: DIGEST})
    assert f"manifest digest `{DIGEST}`" in page and "(the one the registry serves today)" in page


@pytest.mark.parametrize("content", [None, "[]", '{"image": "x"}', '{"image": "x", "manifest_digest": "sha256:ab\\n"}',
                                     '{"image": "a b", "manifest_digest": "sha256:' + "ab" * 32 + '"}', "\xff"])
def test_an_image_mode_run_without_a_sound_image_json_is_bad_input(raw, content):
    m = matrix_mod.load(ROOT / "matrix.yaml")
    if content is not None:
        (raw / "image.json").write_text(content, encoding="utf-8", errors="surrogateescape")
    with pytest.raises(InputError, match="image.json"):
        gpu_record.record(m, m.select([ROW])[0], raw, "2026-12-07", "image")


def test_a_host_mode_record_cannot_claim_an_image_nor_an_image_mode_one_lack_it(raw):
    m = matrix_mod.load(ROOT / "matrix.yaml")
    run = gpu_record.record(m, m.select([ROW])[0], raw, "2026-12-07", "host")
    data = json.loads(run.model_dump_json())
    with pytest.raises(ValueError, match="names its image"):
        gpurun.GpuRun.model_validate({**data, "mode": "image"})
    with pytest.raises(ValueError, match="names its image"):
        gpurun.GpuRun.model_validate({**data, "image": {"ref": "x", "manifest_digest": DIGEST}})


def test_an_image_mode_record_takes_the_lock_the_image_was_built_from(raw):
    """A row re-locked after its image was built: the record names the image's lock (its label), not today's, and
    claims no pins digest it cannot know."""
    m = matrix_mod.load(ROOT / "matrix.yaml")
    image = {"image": "127.0.0.1:5000/imagematrix/verl:x", "manifest_digest": DIGEST}
    (raw / "image.json").write_text(json.dumps({**image, "labels": {"io.imagematrix.lock.sha256": "ef" * 32}}))
    run = gpu_record.record(m, m.select([ROW])[0], raw, "2026-12-07", "image")
    assert (run.lock_sha256, run.lock_pins_sha256) == ("ef" * 32, "")
    (raw / "image.json").write_text(json.dumps({**image, "labels": {"io.imagematrix.lock.sha256": "x\n"}}))
    with pytest.raises(InputError, match="image.json"):
        gpu_record.record(m, m.select([ROW])[0], raw, "2026-12-07", "image")
