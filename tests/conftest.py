from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from imagematrix.cli import app as cli

ROOT = Path(__file__).resolve().parent.parent

# One small, valid row (the verl 0.3 + vLLM 0.7.2 pins); tests vary it.
GOOD_ROW = """\
  - verl: "0.3.0.post1"
    vllm: "0.7.2"
    torch: "2.5.1"
    cuda: "12.4"
    flash_attn: null
    tensordict: "0.6.2"
    transformers: "4.49.0"
"""
GOOD_MATRIX = 'defaults:\n  python: "3.11"\n  base: debootstrap:bookworm\nrows:\n' + GOOD_ROW


class Result:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"Result(code={self.code}, out={self.out[-2000:]!r}, err={self.err[-2000:]!r})"


@pytest.fixture
def run(capsys):
    """Run the CLI in-process; returns exit code and captured output."""

    def _run(*args: str) -> Result:
        code = cli.main([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return _run


@pytest.fixture
def write_matrix(tmp_path):
    def _write(text: str, name: str = "matrix.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text) if text.startswith("\n") else text)
        return path

    return _write


@pytest.fixture
def project_copy(tmp_path) -> Path:
    """The real matrix with its locks, in a temporary directory (outputs land there)."""
    shutil.copy(ROOT / "matrix.yaml", tmp_path / "matrix.yaml")
    shutil.copytree(ROOT / "locks", tmp_path / "locks")
    return tmp_path / "matrix.yaml"


def push_tiny_image(cli: str, ref: str, labels: dict[str, str], env: dict | None = None) -> None:
    """Push an empty image carrying `labels` to ref: stands for a published row without building 7 GB."""
    changes = [a for key, value in labels.items() for a in ("--change", f"LABEL {key}={value}")]
    empty = subprocess.run(["tar", "-c", "-T", "/dev/null"], capture_output=True).stdout
    imported = subprocess.run([cli, "import", *changes, "-", ref], input=empty, capture_output=True)
    assert imported.returncode == 0, imported.stderr
    pushed = subprocess.run([cli, "push", ref], capture_output=True, text=True, env=env)
    assert pushed.returncode == 0, pushed.stderr
    subprocess.run([cli, "rmi", ref], capture_output=True)


MARKED_TIERS = ("process", "fuzz")  # a test under tests/<tier>/ carries the marker of that name (pyproject.toml)


def pytest_sessionfinish(session):
    """Tests remove what they create: the registry namespaces they asked tests.support.namespace for, and the
    daemon's tags under them (issue 27)."""
    from tests import support

    if support.CREATED_NAMESPACES:
        support.remove_namespaces(support.CREATED_NAMESPACES)
        support.CREATED_NAMESPACES.clear()


def pytest_collection_modifyitems(items):
    for item in items:
        parts = item.path.relative_to(ROOT).parts if item.path.is_relative_to(ROOT) else ()
        if len(parts) > 1 and parts[0] == "tests" and parts[1] in MARKED_TIERS:
            item.add_marker(parts[1])
