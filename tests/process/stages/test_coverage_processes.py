"""The tests of tests/unit/stages/test_coverage.py that start a process, serve HTTP or kill:
the process tier. The pure ones stay there."""

from __future__ import annotations

import pytest

from imagematrix.stages import coverage
from imagematrix.tools import cuobjdump
from tests.unit.stages.test_coverage import FIXTURES, FOUND


@pytest.mark.skipif(cuobjdump.find() is None, reason=f"cuobjdump is not installed ({cuobjdump.INSTALL_HINT})")
def test_read_with_the_real_cuobjdump(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGEMATRIX_CACHE", str(tmp_path / "cache"))
    assert coverage.read([FIXTURES / name for name in FOUND]) == {FIXTURES / name: f for name, f in FOUND.items()}
