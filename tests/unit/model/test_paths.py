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


def test_the_data_root_is_the_checkout_holding_the_package_else_the_current_directory(tmp_path, monkeypatch):
    """In a clone (or an editable install) the data sits beside the package; an installed package (site-packages has
    no knowledge/) reads the checkout it is run in. The suites are always the package's own."""
    assert (paths.ROOT / "knowledge").is_dir() and paths.SUITES == paths.PACKAGE / "suites"
    assert paths.PACKAGE == paths.ROOT / "imagematrix"
    site = tmp_path / "site-packages" / "imagematrix" / "model"
    site.mkdir(parents=True)
    monkeypatch.setattr(paths, "__file__", str(site / "paths.py"))
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    monkeypatch.chdir(checkout)
    assert paths._root() == checkout.resolve()
    (tmp_path / "site-packages" / "knowledge").mkdir()
    assert paths._root() == (tmp_path / "site-packages").resolve()
