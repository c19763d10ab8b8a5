"""Pure functions: tags, flash-attn wheel names, env defaults, lock parsing."""

from __future__ import annotations

import pytest

from imagematrix.knowledge import envdefaults, flashattn
from imagematrix.model import lockfile, matrix, tags
from imagematrix.stages import resolve
from tests.conftest import GOOD_MATRIX


def test_row_id_from_pins():
    assert tags.row_id(verl="0.5.0", vllm="0.10.0", torch="2.7.1", cuda="12.6", python="3.11",
                       flash_attn="2.8.1") == "verl0.5.0-vllm0.10.0-torch2.7.1-cu126-py311-fa2.8.1"
    assert tags.row_id(verl="0.3.0.post1", vllm="0.7.2", torch="2.5.1", cuda="12.4",
                       python="3.10") == "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py310"


def test_row_id_is_a_valid_tag_and_changes_with_every_pin():
    base = dict(verl="0.4.1", vllm="0.8.5", torch="2.6.0", cuda="12.4", python="3.11", flash_attn="2.7.4.post1")
    ids = {tags.row_id(**base)}
    for key, other in [("verl", "0.4.0"), ("vllm", "0.8.4"), ("torch", "2.6.1"), ("cuda", "12.6"),
                       ("python", "3.10"), ("flash_attn", None)]:
        ids.add(tags.row_id(**{**base, key: other}))
    assert len(ids) == 7
    assert all(tags.TAG_RE.match(i) for i in ids)


def test_candidate_tag_is_valid_and_distinct_from_final():
    tag = tags.candidate_tag("verl0.5.0-vllm0.10.0-torch2.7.1-cu126-py311", "sha256:" + "ab" * 32)
    assert tags.TAG_RE.match(tag) and tag.startswith("candidate-") and tag.endswith("abababababab")
    assert tags.final_tags("r", "0.10.0") == ["r", "vllm0.10.0"]


def test_the_vllm_alias_belongs_to_the_last_row_of_its_version():
    published = tags.published_tags([("a", "0.7.2"), ("b", "0.8.5"), ("c", "0.7.2")])
    assert published == {"a": ["a"], "b": ["b", "vllm0.8.5"], "c": ["c", "vllm0.7.2"]}


@pytest.mark.parametrize(("fa", "torch", "cuda", "py", "name"), [
    # names as published on the flash-attention GitHub releases
    ("2.7.4.post1", "2.6.0", "12.4", "3.11", "flash_attn-2.7.4.post1+cu12torch2.6cxx11abiFALSE-cp311-cp311-linux_x86_64.whl"),
    ("2.7.4.post1", "2.5.1", "12.4", "3.10", "flash_attn-2.7.4.post1+cu12torch2.5cxx11abiFALSE-cp310-cp310-linux_x86_64.whl"),
    ("2.8.1", "2.7.1", "12.6", "3.11", "flash_attn-2.8.1+cu12torch2.7cxx11abiTRUE-cp311-cp311-linux_x86_64.whl"),
    ("2.8.3", "2.8.0", "12.8", "3.12", "flash_attn-2.8.3+cu12torch2.8cxx11abiTRUE-cp312-cp312-linux_x86_64.whl"),
])
def test_flash_attn_wheel_name(fa, torch, cuda, py, name):
    assert flashattn.wheel_name(flash_attn=fa, cuda=cuda, torch=torch, python=py) == name


def test_flash_attn_url_and_mirror():
    kw = dict(flash_attn="2.8.1", cuda="12.6", torch="2.7.1", python="3.11")
    assert flashattn.wheel_url(**kw) == (
        "https://github.com/Dao-AILab/flash-attention/releases/download/v2.8.1/"
        "flash_attn-2.8.1+cu12torch2.7cxx11abiTRUE-cp311-cp311-linux_x86_64.whl")
    assert flashattn.wheel_url(**kw, base="http://mirror.local/fa/").startswith("http://mirror.local/fa/v2.8.1/")


def test_cxx11abi_boundary_is_torch_2_7():
    assert [flashattn.cxx11abi(t) for t in ("2.4.1", "2.6.0", "2.7.0", "2.8.0", "2.11.0")] == [False, False, True, True, True]




def test_env_defaults_only_where_vllm_reads_them(write_matrix):
    defaults = envdefaults.load()
    row = matrix.load(write_matrix(GOOD_MATRIX)).rows[0]
    assert envdefaults.for_row(row, defaults) == {"VLLM_USE_V1": "0"}
    for vllm, expected in [("0.8.5", {"VLLM_USE_V1": "1"}), ("0.11.0", {"VLLM_USE_V1": "1"}),
                           ("0.11.1", {}), ("0.24.0", {}), ("0.6.3", {})]:
        other = matrix.load(write_matrix(GOOD_MATRIX.replace('vllm: "0.7.2"', f'vllm: "{vllm}"'))).rows[0]
        assert envdefaults.for_row(other, defaults) == expected, vllm


def test_row_env_wins_over_defaults(write_matrix):
    text = GOOD_MATRIX + "    env:\n      VLLM_USE_V1: \"1\"\n      NCCL_DEBUG: WARN\n"
    row = matrix.load(write_matrix(text)).rows[0]
    assert envdefaults.for_row(row, envdefaults.load()) == {"NCCL_DEBUG": "WARN", "VLLM_USE_V1": "1"}


LOCK = """\
filelock==3.20.0 \\
    --hash=sha256:aa
    # via
    #   torch
    #   vllm
mpmath==1.3.0 \\
    --hash=sha256:bb
    # via sympy
nvidia-cublas-cu12==12.4.5.8 \\
    --hash=sha256:cc
    # via
    #   nvidia-cudnn-cu12
    #   torch
nvidia-cudnn-cu12==9.1.0.70 \\
    --hash=sha256:dd
    # via torch
nvidia-cuda-runtime-cu12==12.4.127 \\
    --hash=sha256:ee
    # via torch
sympy==1.13.1 \\
    --hash=sha256:ff
    # via torch
torch==2.5.1 \\
    --hash=sha256:11
    # via
    #   -r requirements.in
    #   vllm
vllm==0.7.2 \\
    --hash=sha256:22
    # via -r requirements.in
"""


def test_parse_lock_and_torch_closure():
    entries = lockfile.parse(LOCK)
    assert entries["nvidia-cublas-cu12"].via == {"nvidia-cudnn-cu12", "torch"}
    assert entries["torch"].version == "2.5.1"
    assert entries["torch"].text == "torch==2.5.1 \\\n    --hash=sha256:11\n"
    closure = [e.name for e in lockfile.torch_closure(entries)]
    # filelock is also needed by vllm, so it belongs to the row layer, not the shared torch layer
    assert closure == ["mpmath", "nvidia-cublas-cu12", "nvidia-cuda-runtime-cu12", "nvidia-cudnn-cu12", "sympy", "torch"]
    assert lockfile.torch_cuda(entries) == "12.4"


def test_an_offline_no_solution_is_never_the_verdict(monkeypatch):
    """Offline, uv says "there is no version of verl[vllm]==X" on a cold cache (issue 13): the network decides."""
    from imagematrix.model import matrix
    from imagematrix.model.errors import RuntimeFailure

    calls = []

    def fake_compile(row, *, hashes, offline=False):
        calls.append(offline)
        if offline:
            raise RuntimeFailure("No solution found when resolving dependencies:\n  Because there is no version of "
                                 "verl[vllm]==0.3.0.post1 and you require verl[vllm]==0.3.0.post1, we can conclude ...")
        return "verl==0.3.0.post1\n"

    monkeypatch.setattr(resolve, "compile_", fake_compile)
    monkeypatch.setattr(resolve, "check_python", lambda row: [])
    row = matrix.load().rows[0]
    assert resolve.resolve(row) == "verl==0.3.0.post1\n"
    assert calls == [True, False]
