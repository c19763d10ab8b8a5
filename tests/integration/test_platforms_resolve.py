"""linux/arm64 rows against the index (issue 29): validate refuses a platform the pins cannot serve, naming the
package; lock writes the arm64 lock beside the amd64 one and leaves the amd64 one as it was. Needs uv and PyPI."""

from __future__ import annotations

import shutil

import pytest

from imagematrix.knowledge import platform_wheels
from imagematrix.model import lockfile
from tests.conftest import GOOD_MATRIX, ROOT
from tests.support import index_drift

pytestmark = pytest.mark.network

ARM = "    platforms: [linux/amd64, linux/arm64]\n"
ROW_0_24 = "verl0.9.1-vllm0.24.0-torch2.11.0-cu130-py311"


def test_validate_refuses_arm64_for_vllm_0_7_naming_each_package(run, write_matrix):
    result = run("validate", "--matrix", write_matrix(GOOD_MATRIX + ARM))
    assert result.code == 2, result
    assert "field platforms" in result.err and "the pins cannot serve linux/arm64" in result.err
    assert "vllm 0.7.2 has no linux aarch64 wheel" in result.err and "tensordict 0.6.2" in result.err


def test_uv_s_own_answer_names_a_package_the_data_does_not_list(run, write_matrix):
    """A pin the data knows nothing of (nvidia-cudnn-cu11 8.5.0.96: one manylinux1_x86_64 wheel) is refused by uv's
    answer, turned into the same message."""
    assert platform_wheels.aarch64_wheel("nvidia-cudnn-cu11", "8.5.0.96", "3.11") is None
    row = ('defaults:\n  python: "3.11"\n  base: debootstrap:bookworm\nrows:\n  - verl: "0.9.1"\n    vllm: "0.24.0"\n'
           '    torch: "2.11.0"\n    cuda: "13.0"\n    tensordict: "0.10.0"\n    transformers: "5.9.0"\n' + ARM
           + '    extras:\n      nvidia-cudnn-cu11: "8.5.0.96"\n')
    result = run("validate", "--matrix", write_matrix(row))
    assert result.code == 2, result
    assert "no linux aarch64 wheel of nvidia-cudnn-cu11 8.5.0.96 on the index" in result.err
    assert "field platforms" in result.err


def test_lock_writes_the_arm64_lock_and_keeps_the_amd64_one(run, tmp_path):
    shutil.copytree(ROOT / "locks", tmp_path / "locks")
    (tmp_path / "matrix.yaml").write_text((ROOT / "matrix.yaml").read_text())
    arm64 = tmp_path / "locks" / "linux-arm64" / f"{ROW_0_24}.txt"
    arm64.unlink()
    before = (tmp_path / "locks" / f"{ROW_0_24}.txt").read_bytes()
    result = run("lock", "--matrix", str(tmp_path / "matrix.yaml"), "--row", ROW_0_24)
    assert result.code == 0, result
    # the amd64 lock is re-resolved at its own cutoff and the arm64 one at the same: each the committed lock, but for
    # releases the index has listed under that cutoff since it was written (tests.support.index_drift)
    assert index_drift(before.decode(), (tmp_path / "locks" / f"{ROW_0_24}.txt").read_text()) == []
    text = arm64.read_text()
    assert "platform: aarch64-manylinux_2_35" in text
    assert index_drift((ROOT / "locks" / "linux-arm64" / f"{ROW_0_24}.txt").read_text(), text) == []
    assert lockfile.torch_cuda(lockfile.parse(text)) == "13.0"  # torch's aarch64 wheel brings CUDA 13.0
