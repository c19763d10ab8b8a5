"""Source patches against the real files of the vLLM 0.7.x wheels on PyPI.

Only the three patched files are read, by HTTP range requests into the wheels (a few hundred KB instead of
260 MB per wheel), and cached under ~/.cache/imagematrix. Nothing of vLLM is committed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from imagematrix.in_image import patch_apply
from imagematrix.knowledge import patches
from imagematrix.model import matrix
from imagematrix.model.errors import InputError
from imagematrix.tools import pypi
from tests.conftest import GOOD_MATRIX

PATCHED = ["0.7.0", "0.7.1", "0.7.2"]
ALL = patches.load()


def vllm_file(version: str, path: str) -> str:
    return pypi.wheel_file("vllm", version, path).decode()


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


def test_the_two_layouts_of_the_world_size_check_match_one_anchor():
    patch = {p.id: p for p in ALL}["vllm-parallel-state-world-size"].model_dump()
    body = '        raise RuntimeError(\n            f"world_size ({world_size}) is not equal to "\n            f"x")\n'
    v070 = "def initialize_model_parallel():\n    if (world_size !=\n            tensor_model_parallel_size * pipeline_model_parallel_size):\n" + body + "    x = 1\n"
    v071 = "def initialize_model_parallel():\n    if (world_size\n            != tensor_model_parallel_size * pipeline_model_parallel_size):\n" + body + "    x = 1\n"
    for text in (v070, v071):
        out = patch_apply.apply_text(text, patch)
        assert "RuntimeError" not in out and out.endswith("    x = 1\n")


@pytest.mark.parametrize(("vllm", "expected"), [("0.6.6", 0), ("0.7.0", 3), ("0.7.1", 3), ("0.7.2", 3),
                                                ("0.7.3", 0), ("0.8.5", 0)])
def test_rows_pick_up_patches_by_version(write_matrix, vllm, expected):
    row = matrix.load(write_matrix(GOOD_MATRIX.replace('vllm: "0.7.2"', f'vllm: "{vllm}"'))).rows[0]
    assert len(patches.select(row, ALL).applied) == expected


def test_row_can_opt_out_with_a_reason(write_matrix):
    text = GOOD_MATRIX + "    skip_patches:\n      vllm-pt-weights-no-empty-cache: we want the cache flushed per shard\n"
    selection = patches.select(matrix.load(write_matrix(text)).rows[0], ALL)
    assert [p.id for p in selection.applied] == ["vllm-parallel-state-world-size", "vllm-external-launcher-local-rank"]
    assert selection.skipped == {"vllm-pt-weights-no-empty-cache": "we want the cache flushed per shard"}


def test_opting_out_of_an_unknown_patch_is_an_error(write_matrix):
    text = GOOD_MATRIX + "    skip_patches:\n      no-such-patch: because it does not exist\n"
    with pytest.raises(InputError, match="unknown patch"):
        patches.select(matrix.load(write_matrix(text)).rows[0], ALL)


GOOD_PATCH = """\
patches:
  - id: demo
    package: vllm
    versions: ">=0.7.0,<0.7.3"
    file: vllm/x.py
    description: demo
    anchor: '^(?P<i>[ ]*)a = 1\\n'
    replacement: '\\g<i>a = 2\\n'
    check: "a = 2"
"""


@pytest.mark.parametrize(("change", "message"), [
    (("versions: \">=0.7.0,<0.7.3\"", "versions: \"around 0.7\""), "not a PEP 440 specifier"),
    (("anchor: '^(?P<i>[ ]*)a = 1\\n'", "anchor: '(unclosed'"), "not a valid regular expression"),
    (("\\g<i>a = 2", "\\g<indent>a = 2"), "does not define"),
    (("check: \"a = 2\"", "check: \"a = 1\\n\""), "matches the anchor"),
    (("file: vllm/x.py", "file: vllm/../../etc/passwd.py"), "leaves the package directory"),
    (("    description: demo\n", ""), "Field required"),
    (("    check: \"a = 2\"\n", "    check: \"a = 2\"\n    line: 12\n"), "Extra inputs"),
    (("patches:\n", "patch:\n"), "one key, `patches:`"),
])
def test_malformed_patch_file_exits_2(tmp_path, run, change, message):
    (tmp_path / "bad.yaml").write_text(GOOD_PATCH.replace(*change))
    result = run("render", "--patches", tmp_path, "--check")
    assert result.code == 2, result
    assert message in result.err and "bad.yaml" in result.err


def test_good_patch_file_loads(tmp_path):
    (tmp_path / "ok.yaml").write_text(GOOD_PATCH)
    assert [p.id for p in patches.load(tmp_path)] == ["demo"]


def _fake_site(tmp_path: Path, version: str, files: dict[str, str]) -> Path:
    site = tmp_path / "site"
    dist = site / f"vllm-{version}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n")
    for name, text in files.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(text)
    return site


def _run_applier(site: Path, patch_json: Path, record: Path, *extra: str):
    """Run patch_apply.py as a script, as the Dockerfile does, with `site` as the installed packages."""
    return subprocess.run([sys.executable, patch_apply.__file__, str(patch_json), "--record", str(record), *extra],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(site)})


@pytest.mark.network
def test_in_image_applier_patches_installed_files_and_records_them(tmp_path):
    """The applier as the Dockerfile runs it: a package found through importlib.metadata, a record written."""
    files = {p.file: vllm_file("0.7.2", p.file) for p in ALL}
    site = _fake_site(tmp_path, "0.7.2", files)
    patch_json = tmp_path / "patches.json"
    patch_json.write_text(json.dumps([p.for_image("0.7.2") for p in ALL]))
    record = tmp_path / "out" / "patches-applied.json"
    proc = _run_applier(site, patch_json, record)
    assert proc.returncode == 0, proc.stderr
    applied = json.loads(record.read_text())
    assert [r["id"] for r in applied] == [p.id for p in ALL]
    assert all(r["sha256_before"] != r["sha256_after"] for r in applied)
    verify = _run_applier(site, patch_json, tmp_path / "unused.json", "--verify")
    assert verify.returncode == 0, verify.stderr


@pytest.mark.network
def test_in_image_applier_fails_loudly_when_the_anchor_is_missing(tmp_path):
    files = {p.file: vllm_file("0.7.3", p.file) for p in ALL}
    site = _fake_site(tmp_path, "0.7.2", files)  # claims 0.7.2, carries 0.7.3's code
    patch_json = tmp_path / "patches.json"
    patch_json.write_text(json.dumps([p.for_image("0.7.2") for p in ALL]))
    record = tmp_path / "patches-applied.json"
    proc = _run_applier(site, patch_json, record)
    assert proc.returncode == 1
    assert proc.stderr.count("PATCH FAILED") == 3 and "anchor found 0 times" in proc.stderr
    assert not record.exists()


def test_in_image_applier_refuses_another_version(tmp_path):
    site = _fake_site(tmp_path, "0.7.3", {})
    patch_json = tmp_path / "patches.json"
    patch_json.write_text(json.dumps([p.for_image("0.7.2") for p in ALL]))
    proc = _run_applier(site, patch_json, tmp_path / "r.json")
    assert proc.returncode == 1 and "vllm 0.7.3 installed, the patch was selected for 0.7.2" in proc.stderr
