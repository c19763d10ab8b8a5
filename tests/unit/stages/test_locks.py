"""Which time a row resolves at: its lock's recorded time while the lock is current (re-locking rewrites nothing),
the present for a changed row or with --refresh. The resolutions themselves are in tests/integration."""

from __future__ import annotations

import shutil

from imagematrix.model import matrix as matrix_mod
from imagematrix.stages import locks
from tests.conftest import ROOT

ROW = "verl0.9.1-vllm0.24.0-torch2.11.0-cu130-py312"


def test_a_current_lock_keeps_its_time_a_refresh_or_a_changed_row_takes_now(tmp_path, monkeypatch):
    shutil.copy(ROOT / "matrix.yaml", tmp_path / "matrix.yaml")
    shutil.copytree(ROOT / "locks", tmp_path / "locks")
    m = matrix_mod.load(tmp_path / "matrix.yaml")
    row = m.select([ROW])[0]
    recorded = locks.recorded_time(locks.lock_path(m, row))
    assert recorded and recorded.endswith("Z")
    monkeypatch.setattr(locks, "now", lambda: "2099-01-01T00:00:00Z")
    assert locks.resolution_time(m, row) == recorded
    assert locks.resolution_time(m, row, refresh=True) == "2099-01-01T00:00:00Z"
    text = (tmp_path / "matrix.yaml").read_text().replace('transformers: "5.9.0"\n', 'transformers: "5.9.1"\n')
    (tmp_path / "matrix.yaml").write_text(text)
    changed = matrix_mod.load(tmp_path / "matrix.yaml")
    stale = next(r for r in changed.rows if r.python == "3.12")
    assert locks.lock_status(changed, stale) == "stale"
    assert locks.resolution_time(changed, stale) == "2099-01-01T00:00:00Z"


def test_every_committed_lock_records_its_time():
    for path in sorted((ROOT / "locks").glob("*.txt")):
        assert locks.recorded_time(path), path.name
