"""`validate` applies the compatibility rules (knowledge/rules.yaml): a known-bad row exits 2 naming the field,
the symptom users see and the fix; `--explain` lists every rule per row. Needs uv and PyPI (network)."""

from __future__ import annotations

import pytest

from imagematrix.model import matrix
from tests.conftest import ROOT

pytestmark = pytest.mark.network

FORKINGPICKLER = """\
defaults:
  python: "3.11"
  base: debootstrap:bookworm
rows:
  - verl: "0.4.1"
    vllm: "0.8.5"
    torch: "2.6.0"
    cuda: "12.4"
    tensordict: "0.5.0"
    transformers: "4.51.3"
"""


def test_tensordict_below_0_6_on_torch_2_6_fails_validate(run, write_matrix):
    result = run("validate", "--matrix", write_matrix(FORKINGPICKLER))
    assert result.code == 2, result
    assert "field tensordict" in result.err and "ForkingPickler" in result.err and "fix:" in result.err


def test_explain_lists_every_rule_for_every_row(run):
    result = run("validate", "--explain", "--matrix", ROOT / "matrix.yaml")
    assert result.code == 0, result
    for rule in ("tensordict-forkingpickler", "vllm-transformers-5", "flash-attn-prebuilt-wheel", "vllm-env-knobs",
                 "verl-declared-ranges", "python-requires"):
        assert result.out.count(rule) == len(matrix.load(ROOT / "matrix.yaml").rows), rule
