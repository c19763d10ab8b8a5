"""Compatibility rules against the real index: verl's declared requirements as its wheel METADATA says them (the
stub in tests/unit/rules/test_rules.py must agree), and every row of the matrix passes every fail rule."""

from __future__ import annotations

import pytest

from imagematrix import rules
from imagematrix.knowledge import verl
from imagematrix.model import lockfile, matrix
from imagematrix.stages import resolve


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
