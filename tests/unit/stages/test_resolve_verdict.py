"""Resolution: which answer of uv is the verdict (stages/resolve.py); the real resolutions are in tests/integration/test_resolve.py."""

from __future__ import annotations

from imagematrix.model import matrix
from imagematrix.stages import resolve


def test_an_offline_no_solution_is_never_the_verdict(monkeypatch):
    """Offline, uv says "there is no version of verl[vllm]==X" on a cold cache (issue 13): the network decides."""
    from imagematrix.model.errors import RuntimeFailure

    calls = []

    def fake_compile(row, *, hashes, offline=False, exclude_newer=None):
        calls.append(offline)
        if offline:
            raise RuntimeFailure("No solution found when resolving dependencies:\n  Because there is no version of "
                                 "verl[vllm]==0.3.0.post1 and you require verl[vllm]==0.3.0.post1, we can conclude ...")
        return "verl==0.3.0.post1\n"

    monkeypatch.setattr(resolve, "compile_", fake_compile)
    monkeypatch.setattr(resolve.requires_python, "check", lambda row: [])
    row = matrix.load().rows[0]
    assert resolve.resolve(row) == "verl==0.3.0.post1\n"
    assert calls == [True, False]
