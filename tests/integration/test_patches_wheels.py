"""Source patches against the real files of the vLLM 0.7.x wheels on PyPI.

Only the three patched files are read, by HTTP range requests into the wheels (a few hundred KB instead of
260 MB per wheel), and cached under ~/.cache/imagematrix. Nothing of vLLM is committed.
"""

from __future__ import annotations

import json

import pytest

from imagematrix.in_image import patch_apply
from imagematrix.knowledge import patches
from imagematrix.tools import pypi
from tests.support import fake_site, run_applier

PATCHED = ["0.7.0", "0.7.1", "0.7.2"]
ALL = patches.load()


@pytest.mark.network
@pytest.mark.parametrize("version", PATCHED)
@pytest.mark.parametrize("patch", ALL, ids=lambda p: p.id)
def test_patch_applies_once_to_real_vllm(patch, version):
    original = vllm_file(version, patch.file)
    patched = patch_apply.apply_text(original, patch.model_dump())
    assert patched != original
    assert patch_apply.verify_text(patched, patch.model_dump()) is None
    assert patch_apply.verify_text(original, patch.model_dump()) is not None
    compile(patched, patch.file, "exec")
    # applying twice fails loudly: the anchor is gone
    with pytest.raises(patch_apply.PatchError, match="anchor found 0 times"):
        patch_apply.apply_text(patched, patch.model_dump())


@pytest.mark.network
@pytest.mark.parametrize("version", PATCHED)
def test_patches_do_what_verl_needs(version):
    by_id = {p.id: p.model_dump() for p in ALL}
    state = patch_apply.apply_text(vllm_file(version, "vllm/distributed/parallel_state.py"),
                                   by_id["vllm-parallel-state-world-size"])
    assert "is not equal to" not in state and "world_size !=" not in state.replace("\n", " ").replace("  ", "")
    launcher = patch_apply.apply_text(vllm_file(version, "vllm/executor/uniproc_executor.py"),
                                      by_id["vllm-external-launcher-local-rank"])
    body = launcher[launcher.index("class ExecutorWithExternalLauncher"):]
    assert 'local_rank = int(os.environ["LOCAL_RANK"])' in body and "local_rank = rank\n" not in body
    weights = patch_apply.apply_text(vllm_file(version, "vllm/model_executor/model_loader/weight_utils.py"),
                                     by_id["vllm-pt-weights-no-empty-cache"])
    start, end = patch_apply.scope_span(weights, "pt_weights_iterator")
    assert "torch.cuda.empty_cache()" not in weights[start:end]
    assert "del state" in weights[start:end]


@pytest.mark.network
@pytest.mark.parametrize("patch", ALL, ids=lambda p: p.id)
def test_anchor_is_gone_in_vllm_0_7_3(patch):
    """Upstream changed the code in 0.7.3: the anchors find nothing, and no row picks the patches up."""
    assert not patch.applies_to("0.7.3")
    with pytest.raises(patch_apply.PatchError, match="0 times"):
        patch_apply.apply_text(vllm_file("0.7.3", patch.file), patch.model_dump())


@pytest.mark.network
def test_in_image_applier_patches_installed_files_and_records_them(tmp_path):
    """The applier as the Dockerfile runs it: a package found through importlib.metadata, a record written."""
    files = {p.file: vllm_file("0.7.2", p.file) for p in ALL}
    site = fake_site(tmp_path, "0.7.2", files)
    patch_json = tmp_path / "patches.json"
    patch_json.write_text(json.dumps([p.for_image("0.7.2") for p in ALL]))
    record = tmp_path / "out" / "patches-applied.json"
    proc = run_applier(site, patch_json, record)
    assert proc.returncode == 0, proc.stderr
    applied = json.loads(record.read_text())
    assert [r["id"] for r in applied] == [p.id for p in ALL]
    assert all(r["sha256_before"] != r["sha256_after"] for r in applied)
    verify = run_applier(site, patch_json, tmp_path / "unused.json", "--verify")
    assert verify.returncode == 0, verify.stderr


@pytest.mark.network
def test_in_image_applier_fails_loudly_when_the_anchor_is_missing(tmp_path):
    files = {p.file: vllm_file("0.7.3", p.file) for p in ALL}
    site = fake_site(tmp_path, "0.7.2", files)  # claims 0.7.2, carries 0.7.3's code
    patch_json = tmp_path / "patches.json"
    patch_json.write_text(json.dumps([p.for_image("0.7.2") for p in ALL]))
    record = tmp_path / "patches-applied.json"
    proc = run_applier(site, patch_json, record)
    assert proc.returncode == 1
    assert proc.stderr.count("PATCH FAILED") == 3 and "anchor found 0 times" in proc.stderr
    assert not record.exists()


def vllm_file(version: str, path: str) -> str:
    return pypi.wheel_file("vllm", version, path).decode()
