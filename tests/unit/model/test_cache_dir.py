"""An unusable cache root ($IMAGEMATRIX_CACHE a file, or under one) is one line naming the variable: exit 1."""

from __future__ import annotations

import pytest

from imagematrix.model import paths
from imagematrix.model.errors import RuntimeFailure

ROW = "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311"


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "a-file"
    path.write_text("not a folder")
    return path


@pytest.mark.parametrize("below", ["", "cache"])
def test_cache_dir_names_the_variable(a_file, monkeypatch, below):
    bad = a_file / below if below else a_file
    monkeypatch.setenv("IMAGEMATRIX_CACHE", str(bad))
    for call in (paths.cache_dir, paths.scratch_dir):
        with pytest.raises(RuntimeFailure, match=rf"^IMAGEMATRIX_CACHE={bad} is not a usable directory: .+; "
                                                 r"fix: point it at a writable folder$"):
            call()


def test_a_usable_cache_dir_is_created(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGEMATRIX_CACHE", str(tmp_path / "new" / "cache"))
    assert paths.cache_dir() == tmp_path / "new" / "cache" and paths.cache_dir().is_dir()


def test_validate_with_an_unusable_cache_exits_1_naming_it(run, project_copy, a_file, monkeypatch):
    """validate reads each pin's Requires-Python through the cache before anything goes to the network."""
    bad = a_file / "cache"
    monkeypatch.setenv("IMAGEMATRIX_CACHE", str(bad))
    result = run("validate", "--matrix", project_copy, "--row", ROW)
    assert result.code == 1, result
    assert "Traceback" not in result.err and "internal error" not in result.err, result
    last = result.err.strip().splitlines()[-1]
    assert last == (f"failed: IMAGEMATRIX_CACHE={bad} is not a usable directory: Not a directory; "
                    "fix: point it at a writable folder"), result
