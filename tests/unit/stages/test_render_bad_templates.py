"""render with a broken Jinja template (issue 13, item 6): an undefined variable, a syntax error, a missing
Dockerfile.j2 or a missing file copied from the templates is bad input, exit 2, naming the template's file and line,
with no traceback and nothing written (it was an internal error, exit 1)."""

from __future__ import annotations

import shutil

import pytest

from imagematrix.model import paths
from tests.conftest import ROOT

ROW1 = "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311"


@pytest.fixture
def templates(tmp_path, monkeypatch):
    """A copy of dockerfiles/templates that render reads instead of the real one."""
    copy = tmp_path / "templates"
    shutil.copytree(ROOT / "dockerfiles" / "templates", copy)
    monkeypatch.setattr(paths, "TEMPLATES", copy)
    return copy


def _render_fails(run, project_copy, where: str, message: str):
    result = run("render", "--matrix", project_copy, "--row", ROW1)
    assert result.code == 2, result
    assert "internal error" not in result.err and "Traceback" not in result.err, result
    assert f"error: {where}: {message}" in result.err, result
    assert not (project_copy.parent / "dockerfiles").exists()  # nothing written
    return result


def test_an_undefined_variable_names_the_template_line(run, project_copy, templates):
    dockerfile = templates / "Dockerfile.j2"
    lines = dockerfile.read_text().splitlines(keepends=True)
    lines.insert(3, "# {{ no_such_variable }}\n")  # line 4, outside any block
    dockerfile.write_text("".join(lines))
    result = _render_fails(run, project_copy, f"{dockerfile}:4", "template uses an undefined variable")
    assert "'no_such_variable' is undefined" in result.err


def test_a_syntax_error_names_the_template_line(run, project_copy, templates):
    dockerfile = templates / "Dockerfile.j2"
    text = dockerfile.read_text()
    dockerfile.write_text(text + "{% if %}\n")
    line = text.count("\n") + 1
    result = _render_fails(run, project_copy, f"{dockerfile}:{line}", "template syntax error")
    assert "fix the Jinja syntax at that line" in result.err


def test_a_missing_dockerfile_template(run, project_copy, templates):
    (templates / "Dockerfile.j2").unlink()
    _render_fails(run, project_copy, str(templates / "Dockerfile.j2"), "template Dockerfile.j2 not found")


def test_a_missing_template_file_copied_into_the_context(run, project_copy, templates):
    (templates / "buildenv.sh").unlink()
    _render_fails(run, project_copy, str(templates / "buildenv.sh"), "cannot read the template file")


@pytest.mark.parametrize(("expression", "error"), [
    ("{{ 1 / 0 }}", "ZeroDivisionError"),  # found by tests/unit/test_fuzz_inputs.py (an internal error before)
    ("{{ 'a' + 1 }}", "TypeError"),
    ("{{ row.id[99] }}", "template uses an undefined variable"),
    ("{% include 'missing.j2' %}", "missing.j2"),
])
def test_a_failing_template_expression_names_the_template_line(run, project_copy, templates, expression, error):
    dockerfile = templates / "Dockerfile.j2"
    lines = dockerfile.read_text().splitlines(keepends=True)
    lines.insert(3, f"# {expression}\n")  # line 4, outside any block
    dockerfile.write_text("".join(lines))
    result = run("render", "--matrix", project_copy, "--row", ROW1)
    assert result.code == 2, result
    assert "internal error" not in result.err and "Traceback" not in result.err, result
    assert f"error: {templates}/" in result.err and error in result.err, result
    assert not (project_copy.parent / "dockerfiles").exists()  # nothing written
