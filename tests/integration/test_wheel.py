"""A wheel built from the tree ships the suites that the smoke stages run against an image (issue 27, item 4), so
that an installed imagematrix can test an image: every file of imagematrix/suites (the shell scripts and the GPU
suite's assets too, which setuptools leaves out unless pyproject.toml lists them as package data), the scripts still
executable, and a fresh venv with that wheel installed finds them where stages/smoke and stages/smoke_gpu look and
collects the GPU suite from there. Builds with pip (setuptools comes from the index: `network`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.network

SUITES = ROOT / "imagematrix" / "suites"
ROW_JSON = ROOT / "dockerfiles" / "generated" / "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311" / "row.json"


def _tree_files() -> set[str]:
    return {str(p.relative_to(SUITES)) for p in SUITES.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def _run(cmd: list, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kwargs)
    assert proc.returncode == 0, f"{cmd}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """`pip wheel --no-deps .` of a copy of the tree (the build writes build/ and *.egg-info beside its sources)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "imagematrix", src / "imagematrix", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--disable-pip-version-check", str(src),
          "-w", str(out)])
    (found,) = out.glob("imagematrix-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed (its dependencies from this Python's site-packages, not the index: a
    .pth file names them, since --system-site-packages would give the base interpreter's when this Python is itself a
    venv's, as in .ci/run)."""
    root = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", str(root)])
    python = root / "bin" / "python"
    own_site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    parent = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    (Path(own_site) / "_parent_site.pth").write_text("".join(f"{p}\n" for p in parent))
    _run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check", str(wheel)])
    return python


def test_the_wheel_holds_every_file_of_the_suites_and_keeps_the_scripts_executable(wheel):
    with zipfile.ZipFile(wheel) as zf:
        infos = {i.filename.removeprefix("imagematrix/suites/"): i for i in zf.infolist()
                 if i.filename.startswith("imagematrix/suites/")}
    assert set(infos) == _tree_files(), sorted(set(infos) ^ _tree_files())
    scripts = [name for name in infos if name.endswith(".sh")]
    assert scripts and all((infos[name].external_attr >> 16) & 0o111 for name in scripts), scripts


def test_a_fresh_venv_with_the_wheel_finds_the_suites_where_the_smoke_stages_look(venv, tmp_path):
    script = ("import json, os, imagematrix\n"
              "from imagematrix.stages import smoke, smoke_gpu\n"
              "files = lambda d: sorted(str(p.relative_to(d.parent)) for p in d.rglob('*')\n"
              "                         if p.is_file() and '__pycache__' not in p.parts)\n"
              "print(json.dumps({'package': imagematrix.__file__, 'cpu': str(smoke.SUITE), 'gpu': str(smoke_gpu.GPU_TESTS),\n"
              "                  'files': files(smoke.SUITE) + files(smoke_gpu.GPU_TESTS),\n"
              "                  'executable': [os.access(p, os.X_OK) for p in smoke_gpu.GPU_TESTS.glob('*.sh')]}))\n")
    # -I: neither the current directory nor PYTHONPATH on sys.path, so the tree's own imagematrix cannot answer
    found = json.loads(_run([venv, "-I", "-c", script], cwd=tmp_path).stdout)
    site = Path(found["package"]).parent
    assert site.is_relative_to(venv.parent.parent), found["package"]
    assert Path(found["cpu"]) == site / "suites" / "cpu" and Path(found["gpu"]) == site / "suites" / "gpu"
    assert set(found["files"]) == _tree_files()
    assert found["executable"] and all(found["executable"])


def test_the_installed_gpu_suite_collects_from_the_venv(venv, tmp_path):
    """What `docker run` mounts into an image (smoke_gpu.GPU_TESTS) is the installed folder: pytest collects it there,
    alone (--confcutdir), as inside an image."""
    gpu = Path(json.loads(_run([venv, "-I", "-c", "import json; from imagematrix.model import paths; "
                                "print(json.dumps(str(paths.SUITES / 'gpu')))"], cwd=tmp_path).stdout))
    proc = _run([venv, "-I", "-m", "pytest", gpu, "--collect-only", "-q", "-p", "no:cacheprovider", "--rootdir", gpu,
                 "--confcutdir", gpu, "--host", "--row-json", ROW_JSON], cwd=tmp_path)
    collected = [line for line in proc.stdout.splitlines() if "::" in line]
    assert len(collected) >= 10 and all(line.startswith("test_gpu_") for line in collected), proc.stdout[-3000:]
    assert os.path.commonpath([gpu, venv.parent.parent]) == str(venv.parent.parent)
