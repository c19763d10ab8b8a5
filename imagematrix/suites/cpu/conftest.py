"""Smoke tests inside an image (pytest-testinfra, docker backend).

    python -m pytest imagematrix/suites/cpu --image REF --row ROW_ID [--matrix matrix.yaml]

What the image must contain comes from outside it: the row in the matrix and its rendered build context
(dockerfiles/generated/<row-id>/), never from files inside the image. `build.py build` and `build.py test` run
exactly this. Without --image every test here skips, saying so.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from imagematrix.model import matrix as matrix_mod
from imagematrix.model import paths
from imagematrix.model.fields import DEFAULT_PLATFORM
from imagematrix.stages.render import Rendered, context_name
from imagematrix.tools import docker


def pytest_addoption(parser):
    group = parser.getgroup("imagematrix smoke tests")
    group.addoption("--image", help="image reference to test")
    group.addoption("--row", help="matrix row id the image was built from")
    group.addoption("--matrix", default=str(paths.MATRIX), help="matrix file (default: matrix.yaml)")
    group.addoption("--platform", default=DEFAULT_PLATFORM,
                    help="the platform the image was built for (default linux/amd64); another one runs emulated on "
                         "an amd64 host (qemu-user) and is checked against that platform's build context")


@pytest.fixture(scope="session")
def platform(request) -> str:
    return request.config.getoption("--platform", default=DEFAULT_PLATFORM)


@pytest.fixture(scope="session")
def image(request) -> str:
    ref = request.config.getoption("--image", default=None)
    if not ref:
        pytest.skip("smoke tests need --image REF --row ID (run them through `build.py test`)")
    return ref


@pytest.fixture(scope="session")
def row(request, image) -> matrix_mod.Row:
    row_id = request.config.getoption("--row", default=None)
    if not row_id:
        pytest.fail("--row is required with --image")
    return matrix_mod.load(request.config.getoption("--matrix", default=str(paths.MATRIX))).select([row_id])[0]


@pytest.fixture(scope="session")
def expected(request, row, platform) -> dict:
    """The rendered row.json (pins, labels, env, patches) and patches.json of the row's build context for the
    platform (dockerfiles/generated/<row-id>@linux-arm64/ for arm64)."""
    root = Path(request.config.getoption("--matrix", default=str(paths.MATRIX))).resolve().parent
    context = root / "dockerfiles" / "generated" / context_name(row.id, platform)
    files = {p.name: p.read_bytes() for p in sorted(context.iterdir()) if p.is_file()}
    return {**json.loads(files["row.json"]), "patch_specs": json.loads(files["patches.json"]),
            "input_digest": Rendered(row=row, files=files, platform=platform).context_digest()}


@pytest.fixture(scope="session")
def cli() -> str:
    return docker.cli()


@pytest.fixture(scope="session")
def container(image, cli, platform):
    name = f"imagematrix-smoke-{uuid.uuid4().hex[:10]}"
    started = subprocess.run([cli, "run", "-d", "--rm", "--name", name, "--platform", platform, "--entrypoint", "sleep",
                              image, "infinity"], capture_output=True, text=True)
    if started.returncode != 0:
        pytest.fail(f"cannot start a container from {image}: {started.stderr}")
    yield name
    subprocess.run([cli, "rm", "-f", name], capture_output=True)


@pytest.fixture(scope="session")
def host(container):
    import testinfra

    return testinfra.get_host(f"docker://{container}")


@pytest.fixture(scope="session")
def inspect(image, cli) -> dict:
    out = subprocess.run([cli, "image", "inspect", image], capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]
