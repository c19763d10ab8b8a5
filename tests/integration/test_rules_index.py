"""Compatibility rules (knowledge/rules.yaml): each rule fails a bad row and passes a good one.

Rows are built through the real matrix loader. The index is not used here: Requires-Python and verl's
Requires-Dist are stubbed with values read from PyPI (tests marked `network` check those against the index).
"""

from __future__ import annotations

import pytest

from imagematrix import rules
from imagematrix.knowledge import verl
from imagematrix.model import lockfile, matrix
from imagematrix.stages import resolve

HEAD = 'defaults:\n  python: "3.11"\n  base: debootstrap:bookworm\nrows:\n'
HEAD_313 = 'defaults:\n  python: "3.13"\n  base: debootstrap:trixie\nrows:\n'
OVERRIDE_05 = {"vllm": ("0.10.0", "verl publishes 0.5.0 with vLLM 0.10.0")}
GOOD = dict(verl="0.3.0.post1", vllm="0.7.2", torch="2.5.1", cuda="12.4", flash_attn=None, tensordict="0.6.2",
            transformers="4.49.0")

# Requires-Dist of the verl wheels on PyPI (the lines that matter here), read 2026-11.
VERL_REQUIRES = {
    "0.3.0.post1": ["ray[default]>=2.10", "tensordict<=0.6.2", "transformers", 'flash-attn; extra == "gpu"',
                    'tensordict<=0.6.2; extra == "vllm"', 'vllm<=0.8.2; extra == "vllm"'],
    "0.4.1": ["ray[default]>=2.41.0", "tensordict<=0.6.2", "transformers", 'torch==2.6.0; extra == "sglang"',
              'tensordict<=0.6.2; extra == "vllm"', 'vllm<=0.8.5; extra == "vllm"'],
    "0.5.0": ["ray[default]>=2.41.0", "tensordict!=0.9.0,<=0.9.1,>=0.8.0", "transformers",
              'torch==2.6.0; extra == "sglang"', 'vllm<=0.8.5,>=0.7.3; extra == "vllm"'],
    "0.6.1": ["ray[default]>=2.41.0", "tensordict!=0.9.0,<=0.10.0,>=0.8.0", "transformers",
              'vllm<=0.11.0,>=0.8.5; extra == "vllm"', 'torch==2.8.0; extra == "sglang"'],
    "0.8.0": ["ray[default]>=2.41.0", "tensordict!=0.9.0,<=0.10.0,>=0.8.0", "transformers",
              'vllm<=0.12.0,>=0.8.5; extra == "vllm"', 'torch==2.9.1; extra == "sglang"'],
    "0.9.1": ["ray[default]>=2.41.0", "tensordict!=0.9.0,<=0.10.0,>=0.8.0", "transformers!=5.6.0,<5.11,>=5.5.3",
              'tensordict!=0.9.0,<=0.10.0,>=0.8.0; extra == "verl-core"', 'verl[verl-core]; extra == "vllm"',
              'torch==2.11.0; extra == "vllm"', 'vllm==0.24.0; extra == "vllm"', 'transformers==5.9.0; extra == "vllm"',
              'torch==2.11.0; extra == "sglang"'],
}
REQUIRES_PYTHON = {("verl", "0.9.1"): "<3.13,>=3.10", ("vllm", "0.10.0"): "<3.13,>=3.9"}


# --- against the real index and matrix (network) -------------------------------------------------------------


@pytest.mark.network
def test_real_verl_metadata_declares_what_the_stub_says(monkeypatch):
    monkeypatch.undo()
    declared = {(r.name, str(r.specifier), e) for r, e in verl.declared("0.5.0", "3.11")}
    assert ("vllm", "<=0.8.5,>=0.7.3", "vllm") in declared
    assert ("tensordict", "!=0.9.0,<=0.9.1,>=0.8.0", "") in declared
    assert "torch" not in {n for n, _, _ in declared}  # torch==2.6.0 belongs to the sglang extra, not the row's
    declared = {(r.name, str(r.specifier), e) for r, e in verl.declared("0.4.1", "3.11")}
    assert ("vllm", "<=0.8.5", "vllm") in declared and ("ray", ">=2.41.0", "") in declared


@pytest.mark.network
def test_real_matrix_passes_every_fail_rule(monkeypatch):
    monkeypatch.undo()
    m = matrix.load()
    for row, result in resolve.parallel(lambda r: lockfile.parse(resolve.resolve(r)), list(m.rows)):
        assert isinstance(result, dict), result
        results = rules.evaluate(row, result)
        assert rules.to_errors(row, results, m.path) == [], rules.explain([(row, results)])
        assert not [r for r in results if r.warned], rules.explain([(row, results)])
