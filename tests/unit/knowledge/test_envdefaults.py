"""Environment defaults by vLLM version, and a row's env over them (knowledge/envdefaults.py)."""

from __future__ import annotations

from imagematrix.knowledge import envdefaults
from imagematrix.model import matrix
from tests.conftest import GOOD_MATRIX

# Every image, whatever its vLLM: the NVIDIA container toolkit mounts CUDA's driver libraries only when asked.
GPU = {"NVIDIA_VISIBLE_DEVICES": "all", "NVIDIA_DRIVER_CAPABILITIES": "compute,utility"}


def test_env_defaults_only_where_vllm_reads_them(write_matrix):
    defaults = envdefaults.load()
    row = matrix.load(write_matrix(GOOD_MATRIX)).rows[0]
    assert envdefaults.for_row(row, defaults) == {"VLLM_USE_V1": "0", **GPU}
    for vllm, expected in [("0.8.5", {"VLLM_USE_V1": "1"}), ("0.11.0", {"VLLM_USE_V1": "1"}),
                           ("0.11.1", {}), ("0.24.0", {}), ("0.6.3", {})]:
        other = matrix.load(write_matrix(GOOD_MATRIX.replace('vllm: "0.7.2"', f'vllm: "{vllm}"'))).rows[0]
        assert envdefaults.for_row(other, defaults) == {**expected, **GPU}, vllm


def test_row_env_wins_over_defaults(write_matrix):
    text = GOOD_MATRIX + "    env:\n      VLLM_USE_V1: \"1\"\n      NCCL_DEBUG: WARN\n      NVIDIA_DRIVER_CAPABILITIES: compute,utility,video\n"
    row = matrix.load(write_matrix(text)).rows[0]
    assert envdefaults.for_row(row, envdefaults.load()) == {
        "NCCL_DEBUG": "WARN", "VLLM_USE_V1": "1", "NVIDIA_VISIBLE_DEVICES": "all",
        "NVIDIA_DRIVER_CAPABILITIES": "compute,utility,video"}
