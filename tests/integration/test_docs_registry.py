"""`build.py docs`: docs/images.md and the README table from the matrix and the registry; `--check` finds drift."""

from __future__ import annotations

import shutil

import pytest

from imagematrix.model import labels, tags
from imagematrix.model import matrix as matrix_mod
from imagematrix.stages import docs, render
from imagematrix.tools import docker, host
from tests import support
from tests.conftest import ROOT, push_tiny_image


@pytest.fixture
def project(project_copy):
    shutil.copy(ROOT / "README.md", project_copy.parent / "README.md")
    return project_copy


def test_docs_then_check_then_drift(run, project):
    assert run("docs", "--offline", "--matrix", project).code == 0
    images = project.parent / "docs" / "images.md"
    text = images.read_text()
    for row in matrix_mod.load(project).rows:
        assert f"`{row.id}`" in text and f"`{row.id}`" in (project.parent / "README.md").read_text()
    assert run("docs", "--offline", "--check", "--matrix", project).code == 0
    images.write_text(text.replace("0.7.2", "0.7.3", 1))
    drift = run("docs", "--offline", "--check", "--matrix", project)
    assert drift.code == 1 and "docs/images.md" in drift.err and "build.py docs" in drift.err


def test_readme_without_markers_is_bad_input(run, project):
    (project.parent / "README.md").write_text("# no table here\n")
    result = run("docs", "--offline", "--matrix", project)
    assert result.code == 2 and "markers" in result.err
    assert not (project.parent / "docs").exists()


def test_status_and_size_come_from_the_registry():
    if not docker.daemon_running() or not host.registry_up():
        pytest.skip("needs a running Docker daemon and the embedded registry: run `python build.py setup`")
    registry = support.namespace("ci")
    m = matrix_mod.load(ROOT / "matrix.yaml")
    first, second = m.rows[0], m.rows[1]
    digest = render.render(m, [first])[0].context_digest()
    push_tiny_image(docker.cli(), f"{tags.repository(registry)}:{first.id}",
                    {labels.INPUT_DIGEST: digest})
    push_tiny_image(docker.cli(), f"{tags.repository(registry)}:{second.id}",
                    {labels.INPUT_DIGEST: "sha256:" + "2" * 64})
    current = docs.published(registry, first, digest)
    assert current.status == "smoke tests passed" and current.size and current.size > 0
    assert docs.published(registry, second, "sha256:" + "3" * 64).status.startswith("stale")
    assert docs.published(registry, m.rows[2], "x").status == "not published"
