"""No secret leaks (issue 13): a distinct random secret in every input channel a build run takes, then commands
that print or log those inputs and fail fast without Docker work; no secret may appear in their stdout, stderr,
nor in any file they write under the log and cache directories.

Channels: the environment (HF_TOKEN, a *_PASSWD, AWS_SECRET_ACCESS_KEY, COSIGN_PASSWORD, VLLM_API_KEY, and one
variable for each other secret word doctor shows: *_PASSWORD, *_PASS, *_SECRET, *_AUTH, *_CREDENTIAL, *_COOKIE; a URL
with userinfo in HF_ENDPOINT), the index variables (UV_DEFAULT_INDEX, UV_INDEX_URL, PIP_INDEX_URL with userinfo, one
at a time, for `validate` and `lock`), a docker config (DOCKER_CONFIG) with `auth` entries, a token the fake
registry's token service hands out, --pip-index-url, --extra-index-url, --apt-mirror, --http-proxy, --https-proxy,
--flash-attn-mirror, --flash-attn-index (URL userinfo) and a CA bundle (--ca-cert, its content).

The fake registry (a thread here) asks for a Bearer token, hands one out only for the docker config's credentials,
then answers 404 for every tag: the commands go on as with an empty registry, having used both secrets.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from imagematrix.model import fields
from imagematrix.tools import docker, host
from tests import support

ROOT = Path(__file__).resolve().parents[2]
FA_ROW = "verl0.4.1-vllm0.8.5-torch2.6.0-cu124-py311-fa2.7.4.post1"  # no mirror, index or registry has its wheel
USER = "someone"

# secret-named variables; those with a prefix doctor reports (HF_, VLLM_, NCCL_, TORCH_, IMAGEMATRIX_) are shown by it
SECRET_ENV = ("HF_TOKEN", "IMAGEMATRIX_REGISTRY_PASSWD", "AWS_SECRET_ACCESS_KEY", "COSIGN_PASSWORD", "VLLM_API_KEY",
              "HF_HUB_PASSWORD", "NCCL_IB_PASS", "TORCH_HUB_SECRET", "VLLM_AUTH_HEADER", "IMAGEMATRIX_CREDENTIAL",
              "HF_COOKIE")
SHOWN_BY_DOCTOR = tuple(n for n in SECRET_ENV if n.startswith(("HF_", "VLLM_", "NCCL_", "TORCH_", "IMAGEMATRIX_")))
INDEX_ENV = ("UV_DEFAULT_INDEX", "UV_INDEX_URL", "PIP_INDEX_URL")  # each set alone, with userinfo
VALIDATE_ROW = "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311"

CHANNELS = (*SECRET_ENV, *INDEX_ENV, "HF_ENDPOINT", "docker-auth-fake", "docker-auth-9", "docker-auth-5000", "registry-token", "pip-index-url",
            "extra-index-url", "apt-mirror", "http-proxy", "https-proxy", "flash-attn-mirror", "flash-attn-index",
            "ca-cert")


def _needs_daemon():
    if not docker.daemon_running():
        pytest.skip("needs a running Docker daemon (build checks it before anything else): run `python build.py setup`")


class FakeRegistry:
    """A registry on 127.0.0.1 that demands a Bearer token from its token service (Basic auth with `creds`)."""

    def __init__(self, creds: tuple[str, str], token: str):
        expected_basic = "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
        self.seen: list[tuple[str, str]] = []  # (path, Authorization)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self):
                auth = self.headers.get("Authorization", "")
                outer.seen.append((self.path, auth))
                if self.path.startswith("/token"):
                    if auth == expected_basic:
                        self._send(200, json.dumps({"token": token}).encode(), "application/json")
                    else:
                        self._send(401, b'{"errors": [{"code": "UNAUTHORIZED"}]}', "application/json")
                    return
                if auth != f"Bearer {token}":
                    realm = f"http://127.0.0.1:{outer.port}/token"
                    self._send(401, b'{"errors": [{"code": "UNAUTHORIZED"}]}', "application/json",
                               {"WWW-Authenticate": f'Bearer realm="{realm}",service="fake",scope="repository:x:pull"'})
                    return
                self._send(404, b'{"errors": [{"code": "MANIFEST_UNKNOWN"}]}', "application/json")

            def _send(self, code, body, content_type, extra=None):
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """The secrets, the environment carrying them, the build-input options, a fake registry and a project copy."""
    work = tmp_path_factory.mktemp("leaks")
    secret = {name: f"S3cr{uuid.uuid4().hex}" for name in CHANNELS}
    # the project: matrix, locks and contexts rendered from the current templates (build checks drift)
    project = work / "project"
    project.mkdir()
    shutil.copy(ROOT / "matrix.yaml", project / "matrix.yaml")
    shutil.copytree(ROOT / "locks", project / "locks")
    rendered = subprocess.run([sys.executable, str(ROOT / "build.py"), "render", "--matrix", str(project / "matrix.yaml")],
                              capture_output=True, text=True, cwd=ROOT)
    assert rendered.returncode == 0, rendered.stderr
    with FakeRegistry((USER, secret["docker-auth-fake"]), secret["registry-token"]) as fake:
        docker_config = work / "docker-config"
        docker_config.mkdir()
        auths = {f"127.0.0.1:{fake.port}": secret["docker-auth-fake"], "127.0.0.1:9": secret["docker-auth-9"],
                 host.REGISTRY: secret["docker-auth-5000"]}
        (docker_config / "config.json").write_text(json.dumps({"auths": {
            h: {"auth": base64.b64encode(f"{USER}:{s}".encode()).decode()} for h, s in auths.items()}}))
        plugins = Path.home() / ".docker" / "cli-plugins"  # keep buildx where the user's docker config has it
        if plugins.is_dir():
            (docker_config / "cli-plugins").symlink_to(plugins)
        ca = work / "inputs" / "proxy-ca.pem"
        ca.parent.mkdir()
        ca.write_text(f"-----BEGIN CERTIFICATE-----\n{secret['ca-cert']}\n-----END CERTIFICATE-----\n")
        env = {**os.environ, "IMAGEMATRIX_CACHE": str(work / "cache"), "DOCKER_CONFIG": str(docker_config),
               "HF_ENDPOINT": f"https://{USER}:{secret['HF_ENDPOINT']}@127.0.0.1:9/hf",
               **{name: secret[name] for name in SECRET_ENV}}
        env.pop("SSL_CERT_FILE", None)
        for name in INDEX_ENV:
            env.pop(name, None)
        inputs = [
            "--pip-index-url", f"https://{USER}:{secret['pip-index-url']}@127.0.0.1:9/simple",
            "--extra-index-url", f"https://{USER}:{secret['extra-index-url']}@127.0.0.1:9/extra/simple",
            "--apt-mirror", f"http://{USER}:{secret['apt-mirror']}@127.0.0.1:9/debian",
            "--http-proxy", f"http://{USER}:{secret['http-proxy']}@127.0.0.1:9",
            "--https-proxy", f"http://{USER}:{secret['https-proxy']}@127.0.0.1:9",
            "--no-proxy", "localhost",
            "--flash-attn-mirror", f"http://{USER}:{secret['flash-attn-mirror']}@127.0.0.1:9/fa",
            "--flash-attn-index", f"http://{USER}:{secret['flash-attn-index']}@127.0.0.1:9/simple",
            "--ca-cert", str(ca),
        ]
        index_env = {name: f"http://{USER}:{secret[name]}@127.0.0.1:9/simple" for name in INDEX_ENV}
        yield {"secret": secret, "env": env, "inputs": inputs, "fake": fake, "work": work, "index_env": index_env,
               "matrix": str(project / "matrix.yaml"), "runs": []}
    # whatever the tests ran, the cache directory they shared is scanned once more at the end
    _assert_clean(secret, "the cache directory after every command", "", "", [work / "cache"])


def _needles(secret: dict[str, str]) -> dict[str, str]:
    """Each secret, and the forms it travels in: base64 of user:secret (docker config, Basic auth)."""
    out = {}
    for name, value in secret.items():
        out[name] = value
        out[f"{name} (base64 user:secret)"] = base64.b64encode(f"{USER}:{value}".encode()).decode()
    return out


def _files(dirs: list[Path]) -> list[Path]:
    return [p for d in dirs if d.exists() for p in sorted(d.rglob("*")) if p.is_file() and not p.is_symlink()]


def _assert_clean(secret: dict[str, str], what: str, stdout: str, stderr: str, dirs: list[Path]) -> None:
    leaks = []
    for label, needle in _needles(secret).items():
        for stream, text in (("stdout", stdout), ("stderr", stderr)):
            if needle in text:
                leaks.append(f"{label} in {stream}")
        for path in _files(dirs):
            if needle.encode() in path.read_bytes():
                leaks.append(f"{label} in {path}")
    assert not leaks, f"{what}: " + "; ".join(leaks)


def _run(planted, *args: str, log_dir: Path | None = None, timeout: float = 300,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    argv = [sys.executable, str(ROOT / "build.py"), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, env={**planted["env"], **(env or {})}, cwd=ROOT,
                          timeout=timeout)
    assert "internal error" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    dirs = [planted["work"] / "cache", planted["work"] / "project"] + ([log_dir] if log_dir else [])
    _assert_clean(planted["secret"], f"`build.py {' '.join(args[:2])}`", proc.stdout, proc.stderr, dirs)
    return proc


def test_harness_plants_every_channel(planted):
    """The secrets are where the tool reads them: the env, the docker config, the options (a leak test that planted
    nothing would pass vacuously)."""
    env, inputs, secret = planted["env"], " ".join(planted["inputs"]), planted["secret"]
    config = (Path(env["DOCKER_CONFIG"]) / "config.json").read_text()
    for name in CHANNELS:
        value = secret[name]
        b64 = base64.b64encode(f"{USER}:{value}".encode()).decode()
        ca = Path(planted["inputs"][planted["inputs"].index("--ca-cert") + 1]).read_text()
        assert (value in env.values() or value in env["HF_ENDPOINT"] or value in inputs or b64 in config
                or value in ca or value in planted["index_env"].get(name, "") or name == "registry-token"), name


def test_doctor_json_and_text(planted):
    for args in (["doctor", "--json", "--matrix", planted["matrix"]], ["doctor", "--matrix", planted["matrix"]]):
        proc = _run(planted, *args)
        assert proc.returncode in (0, 1), proc.stderr
    report = json.loads(_run(planted, "doctor", "--json", "--matrix", planted["matrix"]).stdout)
    env = report["facts"]["env"]
    assert {name: env.get(name) for name in SHOWN_BY_DOCTOR} == dict.fromkeys(SHOWN_BY_DOCTOR, "<set>"), env  # seen
    assert env.get("HF_ENDPOINT") == "https://***@127.0.0.1:9/hf", env
    text = _run(planted, "doctor", "--matrix", planted["matrix"]).stdout
    for name in SHOWN_BY_DOCTOR:
        assert f"{name}=<set>" in text, text


@pytest.mark.parametrize("variable", INDEX_ENV)
@pytest.mark.parametrize("index", ["dead", "refusing"])
@pytest.mark.parametrize("command", [["validate"], ["lock", "--refresh"]])
def test_validate_and_lock_against_an_index_with_credentials(planted, command, index, variable):
    """The one index (the first of the variables that is set) with credentials in its URL, unreachable (port 9) or
    answering 401 (the fake registry): exit 1 naming the index, its credentials nowhere (uv's output, the messages,
    the cache, the project's locks)."""
    url = planted["index_env"][variable]
    if index == "refusing":
        url = url.replace("127.0.0.1:9", f"127.0.0.1:{planted['fake'].port}")
    before = {p: p.read_bytes() for p in (planted["work"] / "project" / "locks").rglob("*") if p.is_file()}
    proc = _run(planted, *command, "--matrix", planted["matrix"], "--row", VALIDATE_ROW, env={variable: url})
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    host = url.split("@", 1)[1].split("/", 1)[0]
    assert f"***@{host}" in proc.stdout + proc.stderr, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert {p: p.read_bytes() for p in (planted["work"] / "project" / "locks").rglob("*") if p.is_file()} == before


def test_plan_against_an_authenticating_registry(planted):
    fake = planted["fake"]
    before = len(fake.seen)
    proc = _run(planted, "plan", "--matrix", planted["matrix"], "--registry", f"127.0.0.1:{fake.port}/ns")
    assert proc.returncode == 0, proc.stderr
    assert "build" in proc.stdout
    seen = fake.seen[before:]
    # both secrets were used: the docker config's credentials at the token service, the token at the registry
    assert any(path.startswith("/token") and auth.startswith("Basic ") for path, auth in seen), seen
    assert any(auth == f"Bearer {planted['secret']['registry-token']}" for _, auth in seen), seen


def test_plan_embedded_registry(planted):
    """`build.py plan` as documented (the embedded registry), or its one-line failure when that is not up."""
    proc = _run(planted, "plan", "--matrix", planted["matrix"])
    assert proc.returncode in (0, 1), proc.stderr


def test_flash_attn_show(planted):
    fake = planted["fake"]
    proc = _run(planted, "flash-attn", "show", "--matrix", planted["matrix"], "--registry",
                f"127.0.0.1:{fake.port}/ns", *planted["inputs"])
    assert proc.returncode == 0, proc.stderr
    assert FA_ROW in proc.stdout
    proc = _run(planted, "flash-attn", "show", "--matrix", planted["matrix"], "--registry", "127.0.0.1:9/nowhere",
                *planted["inputs"])
    assert proc.returncode in (0, 1), proc.stderr


def test_build_unreachable_registry(planted):
    _needs_daemon()
    logs = planted["work"] / "logs-9"
    proc = _run(planted, "build", "--matrix", planted["matrix"], "--row", FA_ROW, "--registry", "127.0.0.1:9/nowhere",
                "--log-dir", str(logs), "--no-flash-attn-compile", *planted["inputs"], log_dir=logs)
    assert proc.returncode == 1, proc.stderr
    assert "127.0.0.1:9" in proc.stdout + proc.stderr  # it failed where expected: the registry check


def _build_to_flash_attn_stage(planted, registry: str, logs: Path) -> str:
    base_here = docker.image_exists(fields.BOOTSTRAP_IMAGE.format(suite="bookworm"))
    proc = _run(planted, "build", "--matrix", planted["matrix"], "--row", FA_ROW, "--registry", registry,
                "--log-dir", str(logs), "--no-flash-attn-compile", *planted["inputs"], log_dir=logs, timeout=600)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    error = (logs / FA_ROW / "error.txt").read_text()
    # with the base image here the run reaches the flash-attn stage (mirror, index, registry all tried);
    # without it the base stage fails first, at the fake apt mirror (debootstrap), which has the secret too
    assert f"stage {'flash-attn' if base_here else 'base'}" in error, error
    if base_here:
        assert "mirror:" in error and "indexes:" in error and "registry:" in error, error
    return error


def test_build_reaches_flash_attn_stage_fake_registry(planted):
    _needs_daemon()
    fake = planted["fake"]
    before = len(fake.seen)
    _build_to_flash_attn_stage(planted, f"127.0.0.1:{fake.port}/ns", planted["work"] / "logs-fake")
    assert any(auth == f"Bearer {planted['secret']['registry-token']}" for _, auth in fake.seen[before:])


def test_build_reaches_flash_attn_stage_embedded_registry(planted):
    _needs_daemon()
    if not host.registry_up():
        pytest.skip("needs the embedded registry on 127.0.0.1:5000: run `python build.py setup`")
    _build_to_flash_attn_stage(planted, support.namespace("test"),
                               planted["work"] / "logs-5000")


def test_the_check_finds_a_leak(tmp_path):
    """_assert_clean itself: a secret in a stream, or its base64 user:secret form in a written file, is reported."""
    secret = {"x": "S3crdeadbeef"}
    with pytest.raises(AssertionError, match="x in stderr"):
        _assert_clean(secret, "planted", "", "oops S3crdeadbeef", [])
    (tmp_path / "log.txt").write_text("Authorization: Basic " + base64.b64encode(f"{USER}:S3crdeadbeef".encode()).decode())
    with pytest.raises(AssertionError, match="base64"):
        _assert_clean(secret, "planted", "", "", [tmp_path])
