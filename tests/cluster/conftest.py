"""Fixtures for the multi-node tests: a real Docker daemon and a real image of a row.

    python -m pytest tests/cluster -m slow [--cluster-image REF] [--cluster-row ID]

Default: the verl 0.3 + vLLM 0.7.2 row, image REGISTRY/verl:<row-id> from the embedded registry's namespace (what
`build.py build` pushes and leaves in the local image store). IMAGEMATRIX_CLUSTER_IMAGE / IMAGEMATRIX_CLUSTER_ROW
do the same as the options (use them when pytest runs from the repository root without `tests/cluster`).
Without a daemon or without the image the tests skip, saying which.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from imagematrix.assist import cluster
from imagematrix.model import matrix as matrix_mod
from imagematrix.model import paths, tags
from imagematrix.model.paths import cache_dir
from imagematrix.tools import docker

DEFAULT_ROW = "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311"


def pytest_addoption(parser):
    group = parser.getgroup("imagematrix cluster tests")
    group.addoption("--cluster-image", help="image for the multi-node tests (default: REGISTRY/verl:<row-id>)")
    group.addoption("--cluster-row", help=f"matrix row of that image (default: {DEFAULT_ROW})")


def _option(config, name: str, env: str) -> str | None:
    return config.getoption(name, default=None) or os.environ.get(env) or None


@pytest.fixture(scope="session")
def cli() -> str:
    if not docker.daemon_running():
        pytest.skip("needs a running Docker daemon: run `python build.py setup`")
    return docker.cli()


@pytest.fixture(scope="session")
def matrix() -> matrix_mod.Matrix:
    return matrix_mod.load(paths.MATRIX)


@pytest.fixture(scope="session")
def row(request, matrix) -> matrix_mod.Row:
    return matrix.select([_option(request.config, "--cluster-row", "IMAGEMATRIX_CLUSTER_ROW") or DEFAULT_ROW])[0]


@pytest.fixture(scope="session")
def image(request, cli, row) -> str:
    ref = (_option(request.config, "--cluster-image", "IMAGEMATRIX_CLUSTER_IMAGE")
           or f"{tags.repository(tags.DEFAULT_REGISTRY)}:{row.id}")
    missing = subprocess.run([cli, "image", "inspect", ref], capture_output=True).returncode != 0
    if missing:  # published but not in this daemon (build skips a row the registry already has): pull it
        missing = subprocess.run([cli, "pull", "-q", ref], capture_output=True, timeout=1800).returncode != 0
    if missing:
        pytest.skip(f"no image {ref} on this Docker host: build it with `python build.py build --row {row.id}` "
                    "(or pass --cluster-image REF)")
    return ref


@pytest.fixture
def name() -> str:
    """A cluster name of the test's own; the test checks nothing carrying it is left behind."""
    return f"{cluster.PREFIX}-test-{uuid.uuid4().hex[:8]}"


def wheel(package: str, version: str, python: str) -> Path:
    """A manylinux x86_64 wheel from PyPI (cached); skips the test when PyPI cannot be reached."""
    tag = "cp" + python.replace(".", "")
    wheels = cache_dir() / "cluster-wheels"
    found = sorted(wheels.glob(f"{package}-{version}-{tag}-*.whl"))
    if found:
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version",
         python, "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64", "--platform",
         "manylinux_2_28_x86_64", "--dest", str(wheels), f"{package}=={version}"],
        capture_output=True, text=True)
    found = sorted(wheels.glob(f"{package}-{version}-{tag}-*.whl"))
    if proc.returncode != 0 or not found:
        pytest.skip(f"needs the {package} {version} wheel from PyPI: {proc.stderr.strip()[-300:]}")
    return found[0]


def derived_image(cli: str, base: str, wheel_path: Path, tag: str) -> str:
    """base with wheel_path installed over its venv (no dependencies): the same image, one package changed."""
    with tempfile.TemporaryDirectory(prefix="imagematrix-cluster-") as tmp:
        ctx = Path(tmp)
        shutil.copy(wheel_path, ctx / wheel_path.name)
        (ctx / "Dockerfile").write_text(
            f"FROM {base}\nCOPY {wheel_path.name} /tmp/\n"
            f"RUN uv pip install --quiet --python /opt/venv/bin/python --no-deps /tmp/{wheel_path.name} "
            f"&& rm /tmp/{wheel_path.name}\n")
        proc = subprocess.run([cli, "build", "--quiet", "--tag", tag, str(ctx)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"docker build of {tag} failed: {proc.stderr[-2000:]}")
    return tag
