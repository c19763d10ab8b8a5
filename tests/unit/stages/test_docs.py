"""`build.py docs`: docs/images.md and the README table from the matrix and the registry; `--check` finds drift."""

from __future__ import annotations

from imagematrix.model import matrix as matrix_mod
from imagematrix.stages import docs
from tests.conftest import ROOT


def test_arch_coverage_comes_from_the_torch_wheel_data():
    row = matrix_mod.load(ROOT / "matrix.yaml").rows[0]
    assert docs.arch_coverage(row).split()[-1] == "90"  # torch 2.5.1 cu124: up to Hopper
