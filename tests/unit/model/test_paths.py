"""Temporary directories live under the cache root, and what a killed run left there is swept later."""

from __future__ import annotations

import os
import time

from imagematrix.model import paths


def test_scratch_is_under_the_cache_root_and_old_leftovers_are_swept(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGEMATRIX_CACHE", str(tmp_path))
    root = paths.scratch_dir()
    assert root == tmp_path / "tmp"
    stale, fresh = root / "uv-killed", root / "uv-running"
    stale.mkdir()
    (stale / "requirements.in").write_text("x")
    fresh.mkdir()
    two_days_ago = time.time() - 2 * 86400
    os.utime(stale, (two_days_ago, two_days_ago))
    paths.scratch_dir()
    assert not stale.exists() and fresh.exists()
