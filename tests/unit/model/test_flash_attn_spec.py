"""The flash-attn wheel spec's names (model/flash_attn.py): release file names, URLs, the C++ ABI boundary, the key and
which index files fit."""

from __future__ import annotations

import pytest

from imagematrix.model.flash_attn import WheelSpec, cxx11abi


@pytest.mark.parametrize(("fa", "torch", "cuda", "py", "name"), [
    # names as published on the flash-attention GitHub releases
    ("2.7.4.post1", "2.6.0", "12.4", "3.11", "flash_attn-2.7.4.post1+cu12torch2.6cxx11abiFALSE-cp311-cp311-linux_x86_64.whl"),
    ("2.7.4.post1", "2.5.1", "12.4", "3.10", "flash_attn-2.7.4.post1+cu12torch2.5cxx11abiFALSE-cp310-cp310-linux_x86_64.whl"),
    ("2.8.1", "2.7.1", "12.6", "3.11", "flash_attn-2.8.1+cu12torch2.7cxx11abiTRUE-cp311-cp311-linux_x86_64.whl"),
    ("2.8.3", "2.8.0", "12.8", "3.12", "flash_attn-2.8.3+cu12torch2.8cxx11abiTRUE-cp312-cp312-linux_x86_64.whl"),
])
def test_flash_attn_wheel_name(fa, torch, cuda, py, name):
    assert WheelSpec(version=fa, cuda=cuda, torch=torch, python=py).filename == name


def test_flash_attn_url_and_mirror():
    spec = WheelSpec(version="2.8.1", cuda="12.6", torch="2.7.1", python="3.11")
    assert spec.url() == (
        "https://github.com/Dao-AILab/flash-attention/releases/download/v2.8.1/"
        "flash_attn-2.8.1+cu12torch2.7cxx11abiTRUE-cp311-cp311-linux_x86_64.whl")
    assert spec.url("http://mirror.local/fa/").startswith("http://mirror.local/fa/v2.8.1/")


def test_cxx11abi_boundary_is_torch_2_7():
    assert [cxx11abi(t) for t in ("2.4.1", "2.6.0", "2.7.0", "2.8.0", "2.11.0")] == [False, False, True, True, True]
