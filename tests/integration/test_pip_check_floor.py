"""Issue 16, item 5: an image whose transformers is below vLLM's declared floor (verl's own published images do this)
fails the smoke tests' `uv pip check` (imagematrix/suites/cpu/test_image.py, PIP_CHECK). Proved without building an image: a
venv holding the real transformers 4.51.3 wheel and vLLM 0.10.0's real METADATA (from its wheel on the index, by HTTP
range; the 400 MB of code are not needed for the check), then the smoke test's own command. Needs uv and the index."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from imagematrix.suites.cpu.test_image import PIP_CHECK
from imagematrix.tools import pypi, uv

pytestmark = pytest.mark.network
VLLM = "0.10.0"  # Requires-Dist: transformers >= 4.53.2


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    try:
        urllib.request.urlopen(urllib.request.Request(f"{pypi.index_url()}/vllm/", method="HEAD"), timeout=15).close()
    except OSError as exc:
        pytest.skip(f"the package index is unreachable ({exc})")
    root = tmp_path_factory.mktemp("pipcheck")
    venv = root / "venv"
    subprocess.run([uv.binary(), "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    dist_info = Path(site) / f"vllm-{VLLM}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_bytes(pypi.wheel_file("vllm", VLLM, f"vllm-{VLLM}.dist-info/METADATA"))
    (dist_info / "INSTALLER").write_text("imagematrix-test\n")
    (dist_info / "RECORD").write_text("")
    return python


def _install_transformers(python, version: str) -> None:
    subprocess.run([uv.binary(), "pip", "install", "-q", "--no-deps", "--python", str(python),
                    f"transformers=={version}"], check=True)


def _check(python) -> tuple[int, list[str]]:
    """The smoke test's command (with the uv this project runs); its exit code and its lines on vLLM's transformers."""
    path = f"{os.path.dirname(uv.binary())}:{os.environ.get('PATH', '')}"
    ran = subprocess.run(shlex.split(PIP_CHECK.format(python=python)), capture_output=True, text=True,
                         env={**os.environ, "PATH": path})
    out = ran.stdout + ran.stderr
    return ran.returncode, [line for line in out.splitlines() if "`vllm`" in line and "transformers" in line]


def test_transformers_below_vllms_floor_fails_the_smoke_tests_pip_check(env):
    _install_transformers(env, "4.51.3")
    code, lines = _check(env)
    assert code != 0
    assert any(">=4.53.2" in line and "4.51.3" in line for line in lines), lines
    # the same environment with transformers at vLLM's floor: no complaint about transformers (the rest of vLLM's
    # dependencies are missing here on purpose, so the check as a whole still fails)
    _install_transformers(env, "4.55.4")
    assert _check(env)[1] == []
