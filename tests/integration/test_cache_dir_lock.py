"""`lock` with an unusable cache root ends in exit 1 and one line naming $IMAGEMATRIX_CACHE (network: lock also
resolves the build tools with uv)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.network


def test_lock_with_an_unusable_cache_exits_1_naming_it(run, project_copy, tmp_path, monkeypatch):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    monkeypatch.setenv("IMAGEMATRIX_CACHE", str(a_file / "cache"))
    before = {p: p.read_text() for p in (project_copy.parent / "locks").rglob("*") if p.is_file()}
    result = run("lock", "--matrix", project_copy, "--row", "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311")
    assert result.code == 1, result
    assert result.err.strip().splitlines()[-1] == (
        f"failed: IMAGEMATRIX_CACHE={a_file / 'cache'} is not a usable directory: Not a directory; "
        "fix: point it at a writable folder"), result
    assert {p: p.read_text() for p in (project_copy.parent / "locks").rglob("*") if p.is_file()} == before  # nothing written
