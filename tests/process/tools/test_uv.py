"""uv and the wheel/metadata reader use one index: UV_DEFAULT_INDEX, UV_INDEX_URL or PIP_INDEX_URL (README said uv
honours PIP_INDEX_URL; it does not by itself, so the tool passes the index explicitly)."""

from __future__ import annotations

import subprocess

import pytest

from imagematrix.tools import pypi, uv


def test_the_index_variables_in_their_order(monkeypatch):
    for name in pypi.INDEX_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert pypi.index_url() == "https://pypi.org/simple"
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.example/pypi/simple/")
    assert pypi.index_url() == "https://mirror.example/pypi/simple"
    monkeypatch.setenv("UV_DEFAULT_INDEX", "https://uv.example/simple")
    assert pypi.index_url() == "https://uv.example/simple"


def test_uv_is_given_the_same_index(monkeypatch):
    for name in pypi.INDEX_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.example/simple")
    seen = {}
    monkeypatch.setattr(uv.subprocess, "run", lambda cmd, **kw: seen.setdefault("cmd", cmd) and subprocess.CompletedProcess(cmd, 0, "", ""))
    monkeypatch.setattr(uv, "binary", lambda: "uv")
    uv.compile_requirements("verl==0.9.1\n", "3.12")
    assert seen["cmd"][seen["cmd"].index("--default-index") + 1] == "https://mirror.example/simple"


def _without_venv_path() -> dict:
    """The environment of a venv that is not activated: its bin directory is not on PATH (nor any other uv)."""
    import os
    import shutil
    import sys
    from pathlib import Path

    bin_dir = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p and p != bin_dir and not shutil.which("uv", path=p))
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PATH")}
    env["PATH"] = path or "/usr/bin:/bin"
    assert shutil.which("uv", path=env["PATH"]) is None
    return env


def test_uv_is_found_beside_the_venvs_python_when_the_venv_is_not_activated():
    """Issue 13, item 2: `.venv/bin/python build.py validate` said "uv is not installed" although uv is installed
    in that venv (the `uv` package, a dependency): uv.binary() asks the package (find_uv_bin), then PATH."""
    import sys
    from pathlib import Path

    from tests.conftest import ROOT

    proc = subprocess.run([sys.executable, "-c", "from imagematrix.tools import uv; print(uv.binary())"],
                          capture_output=True, text=True, env=_without_venv_path(), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    found = Path(proc.stdout.strip())
    assert found.name == "uv" and found.is_file()
    assert found.parent.resolve() == Path(sys.executable).parent.resolve()  # the venv's own uv
    version = subprocess.run([str(found), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("uv ")


def _broken_uv_package(monkeypatch, how: str) -> None:
    """The `uv` package gone (ImportError) or without its binary (find_uv_bin raises FileNotFoundError)."""
    import sys
    import types

    if how == "not installed":
        monkeypatch.setitem(sys.modules, "uv", None)  # `from uv import ...` raises ImportError
        return
    package = types.ModuleType("uv")

    def find_uv_bin():
        raise FileNotFoundError("uv binary not found")

    package.find_uv_bin = find_uv_bin
    monkeypatch.setitem(sys.modules, "uv", package)


@pytest.mark.parametrize("how", ["not installed", "without its binary"])
def test_uv_falls_back_to_path_when_the_uv_package_cannot_give_its_binary(tmp_path, monkeypatch, how):
    """Issue 13, item 2: the package first, then PATH; neither is a RuntimeFailure that says how to install uv."""
    from imagematrix.model.errors import RuntimeFailure

    _broken_uv_package(monkeypatch, how)
    on_path = tmp_path / "bin" / "uv"
    on_path.parent.mkdir()
    on_path.write_text("#!/bin/sh\necho 'uv 0.0.0'\n")
    on_path.chmod(0o755)
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert uv.binary() == str(on_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(RuntimeFailure, match="uv is not installed: run `pip install -e .`"):
        uv.binary()


def test_a_killed_lock_leaves_its_resolution_dir_under_the_cache_root_and_a_later_run_sweeps_it(tmp_path, monkeypatch):
    """Issue 13, item 11: `lock` SIGKILLed while uv runs left /tmp/imagematrix-*/ behind for good. The resolution
    input now lives under $IMAGEMATRIX_CACHE/tmp, where a later run sweeps what is older than a day."""
    import os
    import shutil
    import signal
    import sys
    import time
    from pathlib import Path

    from imagematrix.model import paths
    from tests.conftest import ROOT

    row = "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311"
    shutil.copy(ROOT / "matrix.yaml", tmp_path / "matrix.yaml")
    shutil.copytree(ROOT / "locks", tmp_path / "locks")
    cache, system_tmp, marker = tmp_path / "cache", tmp_path / "system-tmp", tmp_path / "uv-cwd"
    system_tmp.mkdir()
    fake = tmp_path / "fake-uv"  # stands for uv: says where it runs, then hangs until killed
    fake.write_text(f"#!/bin/sh\npwd > {marker}.part && mv {marker}.part {marker}\nexec sleep 120\n")
    fake.chmod(0o755)
    script = ("import sys\nfrom imagematrix.tools import uv\nfrom imagematrix.stages import resolve\n"
              "uv.binary = lambda: sys.argv[1]\nresolve.requires_python.check = lambda row: []\n"
              "from imagematrix.cli import app\nsys.exit(app.main(sys.argv[2:]))\n")
    env = {**os.environ, "IMAGEMATRIX_CACHE": str(cache), "TMPDIR": str(system_tmp)}
    proc = subprocess.Popen([sys.executable, "-c", script, str(fake), "lock", "--row", row,
                             "--matrix", str(tmp_path / "matrix.yaml")],
                            env=env, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "uv was never started"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    left = Path(marker.read_text().strip())
    assert left.is_dir() and (left / "requirements.in").is_file()  # what the killed run left behind
    assert left.parent == cache / "tmp" and not list(system_tmp.iterdir())  # under the cache root, not in TMPDIR
    monkeypatch.setenv("IMAGEMATRIX_CACHE", str(cache))
    paths.scratch_dir()
    assert left.is_dir()  # a day's grace: it may belong to a run still going
    two_days_ago = time.time() - 2 * 86400
    os.utime(left, (two_days_ago, two_days_ago))
    paths.scratch_dir()  # what every later run that resolves calls first
    assert not left.exists()
