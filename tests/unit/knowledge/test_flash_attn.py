"""flash-attn prebuilt wheel names, URLs and the C++ ABI boundary (knowledge/flash_attn.py)."""

from __future__ import annotations

import pytest

from imagematrix.knowledge import flash_attn


@pytest.mark.parametrize(("fa", "torch", "cuda", "py", "name"), [
    # names as published on the flash-attention GitHub releases
    ("2.7.4.post1", "2.6.0", "12.4", "3.11", "flash_attn-2.7.4.post1+cu12torch2.6cxx11abiFALSE-cp311-cp311-linux_x86_64.whl"),
    ("2.7.4.post1", "2.5.1", "12.4", "3.10", "flash_attn-2.7.4.post1+cu12torch2.5cxx11abiFALSE-cp310-cp310-linux_x86_64.whl"),
    ("2.8.1", "2.7.1", "12.6", "3.11", "flash_attn-2.8.1+cu12torch2.7cxx11abiTRUE-cp311-cp311-linux_x86_64.whl"),
    ("2.8.3", "2.8.0", "12.8", "3.12", "flash_attn-2.8.3+cu12torch2.8cxx11abiTRUE-cp312-cp312-linux_x86_64.whl"),
])
def test_flash_attn_wheel_name(fa, torch, cuda, py, name):
    assert flash_attn.wheel_name(flash_attn=fa, cuda=cuda, torch=torch, python=py) == name


def test_flash_attn_url_and_mirror():
    kw = dict(flash_attn="2.8.1", cuda="12.6", torch="2.7.1", python="3.11")
    assert flash_attn.wheel_url(**kw) == (
        "https://github.com/Dao-AILab/flash-attention/releases/download/v2.8.1/"
        "flash_attn-2.8.1+cu12torch2.7cxx11abiTRUE-cp311-cp311-linux_x86_64.whl")
    assert flash_attn.wheel_url(**kw, base="http://mirror.local/fa/").startswith("http://mirror.local/fa/v2.8.1/")


def test_cxx11abi_boundary_is_torch_2_7():
    assert [flash_attn.cxx11abi(t) for t in ("2.4.1", "2.6.0", "2.7.0", "2.8.0", "2.11.0")] == [False, False, True, True, True]


# ---- compiling from the sdist: knowledge/flash-attn.yaml ------------------------------------------------------

from imagematrix.model import matrix as matrix_mod  # noqa: E402
from imagematrix.model.errors import InputError, InputErrors  # noqa: E402


def _row(**overrides):
    m = matrix_mod.load()
    row = next(r for r in m.rows if r.flash_attn == "2.8.3")
    return row.__class__(**{**row.__dict__, **overrides})


def test_default_archs_are_what_flash_attn_and_torch_both_support():
    row = _row(flash_attn_archs=None)
    assert flash_attn.archs(row) == ["8.0", "9.0", "10.0", "12.0"]  # torch 2.11 cu130 has sm_75..sm_120
    assert flash_attn.archs(_row(flash_attn_archs=None, flash_attn="2.7.4.post1")) == ["8.0", "9.0"]
    assert flash_attn.archs(_row()) == ["9.0"]  # the row's own flash_attn_archs
    assert flash_attn.key(_row()) == "2.8.3-cu130-torch2.11.0-cp312-cxx11abiTRUE-sm90"
    assert flash_attn.local_version(_row()) == "cu13torch2.11cxx11abiTRUE"


def test_every_sdist_and_toolchain_line_is_hash_pinned():
    data = flash_attn.data()
    assert {"2.7.4.post1", "2.8.1", "2.8.3"} <= set(data.sdists)
    assert all(len(s.sha256) == 64 for s in data.sdists.values())
    assert any(line.startswith("nvidia-cuda-nvcc==13.0.") for line in flash_attn.toolchain("13.0"))
    assert flash_attn.toolchain("12.4") is None


@pytest.mark.parametrize(("text", "where", "says"), [
    ("sdists: []\narchs: []\nbuild_requirements: []\ntoolchains: {}\ncompile_cost: {core_seconds_per_unit: 1, units: 1}\n",
     ":1", "sdists"),
    ("sdists: {}\narchs: []\nbuild_requirements: ['pip==1']\ntoolchains: {}\ncompile_cost: {core_seconds_per_unit: 1, units: 1}\n",
     ":3", "--hash=sha256"),
    ("sdists: {}\narchs: [{flash_attn: '>=2.8', arch: '9', cuda: '>=12'}]\nbuild_requirements: []\ntoolchains: {}\n"
     "compile_cost: {core_seconds_per_unit: 1, units: 1}\n", ":2", "compute capability"),
    ("- a list\n", ":1", "the top level is a list, not a mapping"),
])
def test_a_malformed_data_file_is_bad_input_with_file_and_line(tmp_path, text, where, says):
    path = tmp_path / "flash-attn.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as failure:
        flash_attn.data.__wrapped__(path)
    assert str(path) in failure.value.where and failure.value.where.endswith(where) and says in str(failure.value)


@pytest.mark.parametrize(("extra", "says"), [
    ('    flash_attn_archs: ["9"]\n', "compute capability"),
    ('    flash_attn_archs: []\n', "each capability once"),
    ('    flash_attn_archs: ["9.0", "9.0"]\n', "each capability once"),
])
def test_flash_attn_archs_is_checked_in_the_matrix(write_matrix, extra, says):
    path = write_matrix(
        'defaults:\n  python: "3.11"\n  base: debootstrap:bookworm\nrows:\n'
        '  - {verl: "0.4.1", vllm: "0.8.5", torch: "2.6.0", cuda: "12.4", tensordict: "0.6.2", '
        'transformers: "4.51.3", flash_attn: "2.7.4.post1"}\n'
        '  - verl: "0.4.1"\n    vllm: "0.8.5"\n    torch: "2.6.0"\n    cuda: "12.4"\n    tensordict: "0.6.2"\n'
        '    transformers: "4.51.3"\n    flash_attn: "2.7.4.post1"\n    id: other\n' + extra)
    with pytest.raises((InputError, InputErrors)) as failure:
        matrix_mod.load(path)
    assert says in str(failure.value) and "flash_attn_archs" in str(failure.value)


def test_flash_attn_archs_without_flash_attn_is_an_error(write_matrix):
    path = write_matrix(
        'defaults:\n  python: "3.11"\n  base: debootstrap:bookworm\nrows:\n'
        '  - verl: "0.4.1"\n    vllm: "0.8.5"\n    torch: "2.6.0"\n    cuda: "12.4"\n    tensordict: "0.6.2"\n'
        '    transformers: "4.51.3"\n    flash_attn_archs: ["9.0"]\n')
    with pytest.raises((InputError, InputErrors), match="pins no flash_attn"):
        matrix_mod.load(path)
