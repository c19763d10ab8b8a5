"""Environment defaults by vLLM version, and a row's env over them (knowledge/envdefaults.py)."""

from __future__ import annotations

import pytest

from imagematrix.knowledge import envdefaults
from imagematrix.model import matrix
from imagematrix.model.errors import InputError
from tests.conftest import GOOD_MATRIX, ROOT

# Every image, whatever its vLLM: the NVIDIA container toolkit mounts CUDA's driver libraries only when asked.
GPU = {"NVIDIA_VISIBLE_DEVICES": "all", "NVIDIA_DRIVER_CAPABILITIES": "compute,utility"}


def test_env_defaults_only_where_vllm_reads_them(write_matrix):
    defaults = envdefaults.load()
    row = matrix.load(write_matrix(GOOD_MATRIX)).rows[0]
    assert envdefaults.for_row(row, defaults) == {"VLLM_USE_V1": "0", **GPU}
    for vllm, expected in [("0.8.5", {"VLLM_USE_V1": "1"}), ("0.11.0", {"VLLM_USE_V1": "1"}),
                           ("0.11.1", {}), ("0.20.2", {}), ("0.21.0", {"VLLM_USE_FLASHINFER_SAMPLER": "0"}),
                           ("0.24.0", {"VLLM_USE_FLASHINFER_SAMPLER": "0"}), ("0.6.3", {})]:
        other = matrix.load(write_matrix(GOOD_MATRIX.replace('vllm: "0.7.2"', f'vllm: "{vllm}"'))).rows[0]
        assert envdefaults.for_row(other, defaults) == {**expected, **GPU}, vllm


def test_row_env_wins_over_defaults(write_matrix):
    text = GOOD_MATRIX + "    env:\n      VLLM_USE_V1: \"1\"\n      NCCL_DEBUG: WARN\n      NVIDIA_DRIVER_CAPABILITIES: compute,utility,video\n"
    row = matrix.load(write_matrix(text)).rows[0]
    assert envdefaults.for_row(row, envdefaults.load()) == {
        "NCCL_DEBUG": "WARN", "VLLM_USE_V1": "1", "NVIDIA_VISIBLE_DEVICES": "all",
        "NVIDIA_DRIVER_CAPABILITIES": "compute,utility,video"}


# --- issue 13, item 6: items that are not mappings are bad input at their line ------------------------------------

@pytest.mark.parametrize("item", ["just a string", "[VLLM_USE_V1, '1']", "42", "null", "[[name, X], [value, '1']]"])
def test_an_env_default_that_is_not_a_mapping_is_bad_input_at_its_line(tmp_path, item):
    path = tmp_path / "env-defaults.yaml"
    path.write_text("env:\n  - name: VLLM_USE_V1\n    value: \"0\"\n    vllm: \"<0.8\"\n    reason: a reason long enough\n"
                    f"  - {item}\n")
    with pytest.raises(InputError) as info:
        envdefaults.load(path)
    assert info.value.where == f"{path}:6", info.value.render()
    assert info.value.message.startswith("invalid env default: expected a mapping with name, value, vllm and reason")
    assert info.value.fix


def test_an_env_default_that_is_not_a_mapping_exits_2_with_file_and_line(tmp_path, monkeypatch, run, project_copy):
    path = tmp_path / "env-defaults.yaml"
    path.write_text((ROOT / "knowledge" / "env-defaults.yaml").read_text().replace("env:\n", "env:\n  - oops\n", 1))
    line = path.read_text().splitlines().index("  - oops") + 1
    monkeypatch.setattr(envdefaults.load, "__defaults__", (path,))  # the default bound at import
    result = run("render", "--matrix", project_copy, "--row", "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311")
    assert result.code == 2, result
    assert f"error: {path}:{line}: invalid env default" in result.err
    assert "Traceback" not in result.err and "internal error" not in result.err
    assert not (project_copy.parent / "dockerfiles").exists()
