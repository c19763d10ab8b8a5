"""Faults during `build.py build`: each names the row and stage, pushes nothing and exits non-zero.

Real daemon, real registries (the embedded one, and a second one with htpasswd authentication that the test starts),
real BuildKit. Nothing here is slow: every failure happens before a long step, or on top of cached stages.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imagematrix.knowledge import flash_attn
from imagematrix.model import labels, lockfile, tags
from imagematrix.model import matrix as matrix_mod
from imagematrix.stages import publish, render
from imagematrix.tools import docker, host
from tests import support
from tests.conftest import GOOD_ROW, ROOT, push_tiny_image

ROW1 = "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311"


def build(*args: str, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "build.py", "build", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


@pytest.fixture(scope="module")
def daemon():
    if not docker.daemon_running():
        pytest.skip("needs a running Docker daemon: run `python build.py setup`")
    return docker.cli()


@pytest.fixture
def namespace(daemon):
    """A fresh namespace in the embedded registry. A machine with a daemon but no registry (a GitHub-hosted runner
    in the lint job) skips, saying so, instead of failing every row at its registry check."""
    if not host.registry_up():
        pytest.skip(f"needs the embedded registry on {host.REGISTRY}: run `python build.py setup`")
    return support.namespace("fault")


def project(tmp_path: Path, base: str, lock_edit=None) -> Path:
    """A project with one row (the ROW1 pins) on `base`, locked from the committed lock and rendered."""
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(f'defaults:\n  python: "3.11"\n  base: {base}\nrows:\n' + GOOD_ROW
                      + '    extras:\n      pyarrow: "25.0.1"\n')  # as the real row (rule pyarrow-26-numpy-1)
    (tmp_path / "locks").mkdir()
    for name in (f"{ROW1}.txt", "tools.txt"):
        text = (ROOT / "locks" / name).read_text()
        (tmp_path / "locks" / name).write_text(lock_edit(text) if lock_edit and name != "tools.txt" else text)
    proc = subprocess.run([sys.executable, "build.py", "render", "--matrix", str(matrix)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return matrix


def test_no_daemon_is_a_clear_failure():
    proc = build("--row", ROW1, env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert proc.returncode == 1
    assert "no Docker daemon is running" in proc.stderr and "build.py setup" in proc.stderr


def test_unreachable_registry_fails_the_row_at_its_check(daemon, tmp_path):
    proc = build("--row", ROW1, "--registry", "127.0.0.1:9/nowhere", "--log-dir", str(tmp_path))
    assert proc.returncode == 1
    assert re.search(rf"{ROW1}\s.*failed.*check", proc.stdout)
    assert "registry 127.0.0.1:9 is unreachable" in (tmp_path / ROW1 / "error.txt").read_text()


def test_unpullable_base_names_row_stage_and_fix(daemon, namespace, tmp_path):
    matrix = project(tmp_path, "registry.invalid/imagematrix/cuda:12.4.1-runtime")
    proc = build("--matrix", str(matrix), "--registry", namespace, "--log-dir", str(tmp_path / "logs"))
    assert proc.returncode == 1
    error = (tmp_path / "logs" / ROW1 / "error.txt").read_text()
    assert f"row {ROW1}, stage base: cannot pull registry.invalid/imagematrix/cuda:12.4.1-runtime" in error
    assert "debootstrap:" in error  # the fix: bootstrap a base from a distribution mirror
    assert publish.remote_labels(namespace, ROW1) is None


def test_unbootstrappable_base_names_row_stage_and_mirror(daemon, namespace, tmp_path):
    if docker.image_exists("imagematrix-base:jammy"):
        pytest.skip("imagematrix-base:jammy exists here, so nothing would be bootstrapped")
    if not shutil.which("debootstrap"):
        pytest.skip("needs debootstrap: run `python build.py setup`")
    matrix = project(tmp_path, "debootstrap:jammy")
    proc = build("--matrix", str(matrix), "--registry", namespace, "--log-dir", str(tmp_path / "logs"),
                 "--apt-mirror", "http://127.0.0.1:9/ubuntu")
    assert proc.returncode == 1
    error = (tmp_path / "logs" / ROW1 / "error.txt").read_text()
    assert f"row {ROW1}, stage base: debootstrap jammy from http://127.0.0.1:9/ubuntu failed" in error
    assert not docker.image_exists("imagematrix-base:jammy")


def test_failing_pip_install_names_row_and_stage_and_pushes_nothing(daemon, namespace, tmp_path):
    """A lock whose hashes for `six` match no file (as when the index `lock` read served other bytes than the one
    the build reads): uv must refuse inside the build. The lock's body digest is sealed over the bad hashes, as
    `lock` would have written it; an unsealed hand edit stops at render (tests/unit/stages/test_locks.py)."""
    if not docker.image_exists("imagematrix-base:bookworm"):
        pytest.skip("needs the bookworm base that the real-build tests bootstrap")
    bogus = secrets.token_hex(32)  # a new layer input on every run, so BuildKit cannot answer from its cache

    def tamper(text: str) -> str:
        text = re.sub(r"(six==1\.17\.0 \\\n)(\s+--hash=sha256:)[0-9a-f]{64}( \\\n\s+--hash=sha256:)[0-9a-f]{64}",
                      rf"\g<1>\g<2>{bogus}\g<3>{bogus}", text)
        header, body = lockfile.split(text)
        sealed = lockfile.BODY_DIGEST_RE.sub(f"# body-digest: {lockfile.body_digest(body)}\n", header, count=1)
        assert sealed != header
        return sealed + body

    matrix = project(tmp_path, "debootstrap:bookworm", tamper)
    assert bogus in (tmp_path / "dockerfiles" / "generated" / ROW1 / "requirements.txt").read_text()
    proc = build("--matrix", str(matrix), "--registry", namespace, "--log-dir", str(tmp_path / "logs"),
                 "--ca-cert", "/etc/ssl/certs/ca-certificates.crt")
    assert proc.returncode == 1, proc.stdout[-2000:]
    error = (tmp_path / "logs" / ROW1 / "error.txt").read_text()
    assert f"row {ROW1}, stage build: BuildKit build failed" in error
    assert "six" in error and "hash" in error.lower(), error
    assert publish.remote_labels(namespace, ROW1) is None


# --- a registry with authentication -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def auth_registry(daemon, tmp_path_factory):
    """Debian's docker-registry with htpasswd (bcrypt) auth on a free loopback port; yields (address, user, pw)."""
    bcrypt = pytest.importorskip("bcrypt")
    if not shutil.which("docker-registry"):
        pytest.skip("needs Debian's docker-registry: run `python build.py setup`")
    root = tmp_path_factory.mktemp("auth-registry")
    user, password = "imagematrix", f"pw-{secrets.token_hex(12)}"
    (root / "htpasswd").write_bytes(user.encode() + b":" + bcrypt.hashpw(password.encode(), bcrypt.gensalt()) + b"\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    (root / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {root / 'storage'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: {address}\nauth:\n  htpasswd:\n    realm: imagematrix-test\n    path: {root / 'htpasswd'}\n")
    server = subprocess.Popen(["docker-registry", "serve", str(root / "config.yml")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not host._listening(address):
        time.sleep(0.2)
    yield address, user, password
    server.terminate()
    server.wait(10)


def docker_config(tmp_path: Path) -> Path:
    """An empty docker config dir that still finds the buildx plugin."""
    config = tmp_path / "docker-config"
    config.mkdir()
    plugins = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "cli-plugins"
    if plugins.is_dir():
        (config / "cli-plugins").symlink_to(plugins)
    return config


def test_authenticated_registry_credentials_from_docker_login(daemon, auth_registry, tmp_path, monkeypatch):
    address, user, password = auth_registry
    namespace = f"{address}/imagematrix-auth"
    repo = tags.repository(namespace)
    m = matrix_mod.load(ROOT / "matrix.yaml")
    row = m.select([ROW1])[0]
    digest = render.render(m, [row])[0].context_digest()
    config = docker_config(tmp_path)
    env = {"DOCKER_CONFIG": str(config)}

    # Without credentials: a clear refusal that says how to log in, and no password anywhere.
    proc = build("--row", ROW1, "--registry", namespace, "--log-dir", str(tmp_path / "logs0"), env=env)
    assert proc.returncode == 1
    error = (tmp_path / "logs0" / ROW1 / "error.txt").read_text()
    assert f"docker login {address}" in error

    login = subprocess.run([daemon, "login", address, "-u", user, "--password-stdin"], input=password,
                           capture_output=True, text=True, env={**os.environ, **env})
    assert login.returncode == 0, login.stderr
    # A tiny image standing for an already published row: the same input digest as ROW1's committed context.
    push_tiny_image(daemon, f"{repo}:{ROW1}", {labels.INPUT_DIGEST: digest}, env={**os.environ, **env})

    # With the docker login: the row is recognised as published (authenticated reads), and its missing
    # vllm alias is tagged in the registry (an authenticated manifest PUT), without pulling 7 GB.
    proc = build("--row", ROW1, "--registry", namespace, "--log-dir", str(tmp_path / "logs1"), env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"{ROW1}: skipped" in proc.stdout
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    for output in (proc.stdout + proc.stderr, error, *(p.read_text() for p in tmp_path.rglob("*.txt"))):
        assert password not in output and auth not in output
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    assert publish.remote_labels(namespace, "vllm0.7.2")[labels.INPUT_DIGEST] == digest


# --- flash-attn rows ----------------------------------------------------------------------------------------

FA_ROW = "verl0.4.1-vllm0.8.5-torch2.6.0-cu124-py311-fa2.7.4.post1"


def test_flash_attn_row_without_a_wheel_source_fails_before_any_build_step(daemon, namespace, tmp_path):
    """No mirror has the wheel (GitHub unreachable here; a loopback port that refuses), no index, nothing in the
    registry, and CUDA 12.4 has no compiler wheels in knowledge/flash-attn.yaml: the row fails at its flash-attn
    stage, listing every source tried, before BuildKit runs; the mirror's credentials never show."""
    row = matrix_mod.load(ROOT / "matrix.yaml").select([FA_ROW])[0]
    token = secrets.token_hex(8)
    started = time.monotonic()
    proc = build("--row", FA_ROW, "--registry", namespace, "--log-dir", str(tmp_path / "a"),
                 "--flash-attn-mirror", f"http://user:{token}@127.0.0.1:9/fa")
    assert proc.returncode == 1 and time.monotonic() - started < 300
    error = (tmp_path / "a" / FA_ROW / "error.txt").read_text()
    assert f"row {FA_ROW}, stage flash-attn: no source has the wheel for key {flash_attn.wheel_spec(row).key}" in error
    assert "compile: no CUDA 12.4 compiler wheels in knowledge/flash-attn.yaml" in error
    assert "registry: " in error and "does not exist" in error
    assert not (tmp_path / "a" / FA_ROW / "build.log").exists()
    assert token not in proc.stdout + proc.stderr + error
    assert publish.remote_labels(namespace, FA_ROW) is None
