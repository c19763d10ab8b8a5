"""`build.py pick`: best row for a GPU/driver/version wish, with the reason for every row left out."""

from __future__ import annotations

import pytest

from imagematrix.assist import pick
from imagematrix.model import matrix as matrix_mod
from imagematrix.stages import publish
from tests.conftest import ROOT

M = matrix_mod.load(ROOT / "matrix.yaml")
NEWEST = max(M.rows, key=lambda r: tuple(int(p) for p in r.vllm.split(".")))


@pytest.fixture(autouse=True)
def nothing_published(monkeypatch):
    """pick asks the registry whether its tag is published; here every tag is absent, without a network
    (test_pick_published.py covers the answers)."""
    monkeypatch.setattr(publish, "remote_labels", lambda registry, tag: None)


def test_newest_vllm_wins_when_everything_fits():
    assert pick.pick(M, "H100").best.row == NEWEST


def test_old_driver_excludes_newer_cuda_with_the_reason():
    result = pick.pick(M, "T4", driver="535.104.05")
    assert NEWEST.id in result.excluded and "needs driver >=" in result.excluded[NEWEST.id][0]
    assert result.best.row.cuda != "13.0"
    assert any("no bf16" in n for n in result.best.notes)  # T4 is sm_75
    assert any("minor-version compatibility" in n for n in result.best.notes)


def test_blackwell_needs_a_torch_built_for_it():
    result = pick.pick(M, "B200", vllm="<0.12")
    for row in M.rows:
        if row.cuda in ("12.4", "12.6"):
            assert "no kernel image is available" in result.excluded[row.id][0]
    assert result.best.row.vllm == "0.11.0"


@pytest.mark.parametrize(("text", "inside", "outside"), [
    ("0.5", "0.5.0", "0.6.1"), (">=0.8", "0.8.0", "0.6.1"), ("0.10.0", "0.10.0", "0.10.1"),
])
def test_version_wishes(text, inside, outside):
    spec = pick.wish(text, "verl")
    assert spec.contains(inside) and not spec.contains(outside)


def test_cli_prints_the_pull_line_and_fails_when_nothing_fits(run):
    result = run("pick", "--gpu", "A100", "--vllm", "0.7.2")
    assert result.code == 0 and f"docker pull 127.0.0.1:5000/imagematrix/verl:{M.rows[0].id}" in result.out
    none = run("pick", "--gpu", "A100", "--vllm", ">=0.7", "--driver", "450.80.02")
    assert none.code == 1 and "no row fits" in none.err
    assert run("pick", "--gpu", "Z9000").code == 2
    assert run("pick", "--gpu", "A100", "--vllm", "not a version").code == 2


def test_pick_says_when_an_image_trains_without_flash_attention_2():
    result = pick.pick(matrix_mod.load(ROOT / "matrix.yaml"), "H100", None, "0.24.0", None)
    assert "verl training: trains with sdpa: pass +actor_rollout_ref.model.override_config.attn_implementation=sdpa" \
        in result.best.notes
    fa = pick.pick(matrix_mod.load(ROOT / "matrix.yaml"), "H100", None, "0.8.5", None)
    assert not [n for n in fa.best.notes if n.startswith("verl training")]  # flash-attn ships: nothing to say


def test_a_capability_no_gpu_has_is_bad_input(run):
    result = run("pick", "--gpu", "sm_999")
    assert result.code == 2 and "no NVIDIA GPU has compute capability 99.9" in result.err
    assert run("pick", "--gpu", "sm_50").code == 0  # no model listed, but torch wheels ship sm_50 code
