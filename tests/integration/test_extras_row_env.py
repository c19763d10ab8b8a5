"""The unsloth row's smoke checks against its real, locked dependency set (issue 16, item 5).

Its image cannot be built here: the row ships flash-attn 2.8.1 for torch 2.7.1/cu126, whose wheel is only a GitHub
release asset, and compiling it takes about 3 hours on 2 cores. So the row's lock (every package but flash-attn,
which the lock never holds) is installed from PyPI, hash-checked, into a Python 3.11 venv, and the image's own smoke
test functions (imagematrix/suites/cpu/test_image.py) run against that venv through testinfra's local backend: the extras import
as knowledge/extras.yaml says (unsloth stops at exactly its no-GPU check), `uv pip check` is clean, and the stack
imports. About 5 GB from PyPI, a minute or two."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from imagematrix.knowledge import extras
from imagematrix.model import matrix as matrix_mod
from imagematrix.suites.cpu import test_image
from imagematrix.tools import uv
from tests.conftest import ROOT

ROW = "verl0.5.0-vllm0.10.0-torch2.7.1-cu126-py311-fa2.8.1-unsloth2025.8.10"


def _python311() -> str:
    if sys.version_info[:2] == (3, 11):
        return sys.executable
    found = shutil.which("python3.11")
    if not found:
        pytest.skip("needs a Python 3.11 interpreter (the row's Python) on PATH")
    return found


@pytest.mark.slow
def test_the_unsloth_rows_locked_environment_passes_the_images_extras_smoke_checks(tmp_path, monkeypatch):
    testinfra = pytest.importorskip("testinfra")
    row = matrix_mod.load(ROOT / "matrix.yaml").select([ROW])[0]
    assert [c.dist for c in extras.smoke_plan(row)] == ["pyarrow", "unsloth", "unsloth-zoo"]
    venv = tmp_path / "venv"
    subprocess.run([uv.binary(), "venv", "-q", "--python", _python311(), str(venv)], check=True)
    install = subprocess.run([uv.binary(), "pip", "install", "-q", "--python", str(venv / "bin" / "python"),
                              "--require-hashes", "--no-deps", "-r", str(ROOT / "locks" / f"{ROW}.txt")],
                             capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-3000:]

    monkeypatch.setattr(test_image, "PY", str(venv / "bin" / "python"))
    monkeypatch.setenv("PATH", f"{os.path.dirname(uv.binary())}:{os.environ.get('PATH', '')}")  # the smoke's `uv pip check`
    host = testinfra.get_host("local://")
    test_image.test_extras_import(host, row)
    test_image.test_pip_check_is_clean(host, "linux/amd64")
    for module in ("torch", "vllm", "verl", "transformers", "tensordict"):
        test_image.test_imports(host, row, module)
