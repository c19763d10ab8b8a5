"""Tests find the test extra's tools (hadolint, actionlint, act) beside the interpreter that runs them: a venv that
is not activated has them in its bin/ and not on PATH (issue 27: three tests skipped "not installed" that way)."""

from __future__ import annotations

import sys

from tests import support


def _venv(tmp_path, monkeypatch):
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "elsewhere"))
    return bin_dir


def test_a_tool_beside_the_interpreter_is_found_without_path(tmp_path, monkeypatch):
    bin_dir = _venv(tmp_path, monkeypatch)
    (bin_dir / "hadolint").write_text("#!/bin/sh\n")
    (bin_dir / "hadolint").chmod(0o755)
    assert support.tool("hadolint") == str(bin_dir / "hadolint")
    assert support.venv_path().split(":")[0] == str(bin_dir)


def test_a_file_that_is_not_executable_is_not_a_tool_and_path_comes_next(tmp_path, monkeypatch):
    bin_dir = _venv(tmp_path, monkeypatch)
    (bin_dir / "act").write_text("not a program")
    assert support.tool("act") is None
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "act").write_text("#!/bin/sh\n")
    (elsewhere / "act").chmod(0o755)
    assert support.tool("act") == str(elsewhere / "act")
