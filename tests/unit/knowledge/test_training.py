"""How verl trains in a row's image (knowledge/training.yaml): flash_attention_2, sdpa with the override, or
rollout only; and the rule that a row whose verl hard-codes flash_attention_2 ships flash-attn or says why not."""

from __future__ import annotations

import json
import sys

from imagematrix import rules
from imagematrix.knowledge import training
from imagematrix.model import matrix, paths

ROW = {"verl": "0.3.0.post1", "vllm": "0.7.2", "torch": "2.5.1", "cuda": "12.4", "tensordict": "0.6.2",
       "transformers": "4.49.0"}
HEAD = 'defaults:\n  python: "3.11"\n  base: debootstrap:bookworm\nrows:\n'


def _row(write_matrix, **fields):
    text = HEAD + "  - " + "\n    ".join(f"{k}: {json.dumps(v)}" for k, v in {**ROW, **fields}.items()) + "\n"
    return matrix.load(write_matrix(text)).rows[0]


def _rule(row):
    return next(r for r in rules.evaluate(row) if r.rule == "verl-training-flash-attn")


def test_verl_before_0_6_without_flash_attn_fails_validate(write_matrix):
    row = _row(write_matrix, flash_attn=None)
    result = _rule(row)
    assert result.failed and "flash_attention_2" in result.message and "rollout_only" in result.fix
    assert training.attention(row).rollout_only


def test_a_declared_rollout_only_row_passes_and_says_why(write_matrix):
    row = _row(write_matrix, flash_attn=None, rollout_only="no flash-attn wheel reachable from here")
    assert _rule(row).status == "passed"
    assert training.attention(row).note == ("rollout only: verl 0.3.0.post1 hard-codes flash_attention_2 "
                                            "(no flash-attn wheel reachable from here)")


def test_verl_0_6_and_later_without_flash_attn_train_with_sdpa_through_the_override(write_matrix):
    row = _row(write_matrix, verl="0.6.1", vllm="0.11.0", torch="2.8.0", cuda="12.8", tensordict="0.8.3",
               transformers="4.57.1", flash_attn=None)
    how = training.attention(row)
    assert (how.attn_implementation, how.needs_flash_attn) == ("sdpa", False)
    assert how.override == "+actor_rollout_ref.model.override_config.attn_implementation=sdpa"
    assert _rule(row).status == "passed" and how.override in _rule(row).message


def test_a_row_with_flash_attn_trains_with_flash_attention_2(write_matrix):
    row = _row(write_matrix, verl="0.4.1", vllm="0.8.5", torch="2.6.0", flash_attn="2.7.4.post1", transformers="4.51.3")
    assert training.attention(row).attn_implementation == "flash_attention_2"
    assert _rule(row).status == "passed"


def test_the_gpu_smoke_suite_agrees_with_the_knowledge():
    """imagematrix/suites/gpu is mounted alone into images, so its own training spec repeats where sdpa cannot train:
    it must say what knowledge/training.yaml says."""
    sys.path.insert(0, str(paths.SUITES / "gpu"))
    import gpusmoke

    spec = gpusmoke.load_train_spec()
    hard = [b.verl for b in training.bands() if b.flash_attention_2 == "hard-coded"]
    assert [spec["attention"]["sdpa"]["unsupported"]] == hard
