"""Issue 13, defect 7a-c: a registry (or a proxy in front of one) answering garbage, seen through the commands that
ask it (`plan`, `docs`, `promote`): each exits 1 with a one-line cause naming the registry, never a traceback nor an
"internal error". Run through build.py's entry point (cli.app.main, its top-level handler included) against a local
HTTP server; nothing is written (`docs --check`, `promote` of a row whose candidate the registry cannot show)."""

from __future__ import annotations

import json
import subprocess

import pytest

from imagematrix.cli import app
from tests.support import QuietHandler, serving

ROW = "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _manifest(**config) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": MANIFEST,
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": "sha256:" + "a" * 64, "size": 10, **config},
                       "layers": [{"digest": "sha256:" + "b" * 64, "size": 20}]}).encode()


# (manifest answer, config-blob answer): each is garbage somewhere a command reads
GARBAGE = {
    "html-page": (b"<html>captive portal</html>", b""),
    "not-utf8": (b"\xff\xfe\x00garbage", b""),
    "json-list": (b"[1, 2]", b""),
    "not-a-manifest": (b'{"schemaVersion": 2}', b""),
    "config-not-json": (_manifest(), b"{not json"),
    "config-config-a-string": (_manifest(), b'{"config": "x"}'),
    "labels-a-list": (_manifest(), b'{"config": {"Labels": ["a", "b"]}}'),
    "size-a-string": (_manifest(size="12"), b'{"config": {"Labels": {}}}'),
    "layers-not-objects": (json.dumps({"config": {"digest": "sha256:" + "a" * 64, "size": 1},
                                       "layers": [1, "x"]}).encode(), b'{"config": {"Labels": {}}}'),
}


@pytest.fixture(params=sorted(GARBAGE))
def garbage_registry(request):
    manifest, blob = GARBAGE[request.param]

    class Handler(QuietHandler):
        def _answer(self):
            data = blob if "/blobs/" in self.path else manifest if "/manifests/" in self.path else b"{}"
            self.send_response(200)
            self.send_header("Content-Type", MANIFEST if "/manifests/" in self.path else "application/json")
            self.send_header("Docker-Content-Digest", "sha256:" + "c" * 64)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_HEAD = _answer

        def do_PUT(self):  # a retag must never happen: the candidate's labels are garbage
            raise AssertionError("PUT on a garbage registry")

    with serving(Handler) as server:
        yield f"127.0.0.1:{server.server_port}"


def _build_py(tmp_path, monkeypatch, capsys, *args: str) -> subprocess.CompletedProcess:
    """`build.py ARGS` in this process (the same top-level handler as the script), its exit code and output."""
    monkeypatch.setenv("IMAGEMATRIX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))  # no credentials for the fake registry
    code = app.main(list(args))
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


def _one_line_failure(proc: subprocess.CompletedProcess, host: str) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    for stream in (proc.stdout, proc.stderr):
        assert "Traceback" not in stream and "internal error" not in stream, stream
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if host in line]
    assert lines, (proc.stdout, proc.stderr)
    return lines[0]


@pytest.mark.parametrize("command", [
    ["plan"],
    ["docs", "--check"],
    ["promote", "--row", ROW],
])
def test_a_garbage_registry_is_exit_1_with_a_one_line_cause(command, garbage_registry, tmp_path, monkeypatch, capsys):
    proc = _build_py(tmp_path, monkeypatch, capsys, *command, "--registry", f"{garbage_registry}/ns", "--log-dir", str(tmp_path / "logs"))
    line = _one_line_failure(proc, garbage_registry)
    assert "registry" in line or "NOT promoted" in line, line
    assert not (tmp_path / "logs").exists()


@pytest.fixture
def basic_auth_registry():
    """A registry that asks for Basic credentials on every request."""

    class Handler(QuietHandler):
        def _answer(self):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="registry"')
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD = _answer

    with serving(Handler) as server:
        yield f"127.0.0.1:{server.server_port}"


@pytest.mark.parametrize("command", [["plan"], ["docs", "--check"], ["promote", "--row", ROW]])
def test_a_docker_config_auth_that_is_not_base64_is_exit_1_naming_it(command, basic_auth_registry, tmp_path,
                                                                      monkeypatch, capsys):
    """Defect 7e through the commands: the credentials for the registry are garbage (not base64 user:password)."""
    config = tmp_path / "docker" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"auths": {basic_auth_registry: {"auth": "not base64!!"}}}))
    proc = _build_py(tmp_path, monkeypatch, capsys, *command, "--registry", f"{basic_auth_registry}/ns",
                     "--log-dir", str(tmp_path / "logs"))
    line = _one_line_failure(proc, basic_auth_registry)
    said = " ".join((proc.stdout + proc.stderr).split())  # promote's outcome line is wrapped at the console's width
    assert f"docker config {config}: auth for {basic_auth_registry} is not base64" in said, line
