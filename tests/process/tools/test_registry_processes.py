"""The tests of tests/unit/tools/test_registry.py that start a process, serve HTTP or kill:
the process tier. The pure ones stay there."""

from __future__ import annotations

import json
import os
import stat

from imagematrix.tools import registry
from tests.unit.tools.test_registry import _config


def test_credential_helper_is_asked(tmp_path, monkeypatch):
    helper = tmp_path / "bin" / "docker-credential-imagematrixtest"
    helper.parent.mkdir()
    # a real credential helper speaks this protocol: server URL on stdin, JSON on stdout
    helper.write_text('#!/bin/sh\nread host\n[ "$host" = "ghcr.io" ] || exit 1\n'
                      'echo \'{"Username": "bot", "Secret": "tok"}\'\n')
    helper.chmod(helper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{helper.parent}{os.pathsep}{os.environ['PATH']}")
    _config(tmp_path, monkeypatch, {"credsStore": "imagematrixtest"})
    assert registry.credentials("ghcr.io") == ("bot", "tok")
    assert registry.credentials("quay.io") is None


def test_the_token_never_follows_a_redirect_to_another_host(tmp_path, monkeypatch):
    """ghcr.io answers blob GETs with a redirect to a storage host: the Authorization header must stay behind (it
    leaked the bearer token, and storage hosts reject it). Two local HTTP servers play registry and storage."""
    import http.server
    import threading

    seen = {}

    class Storage(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen["storage"] = self.headers.get("Authorization")
            body = json.dumps({"ok": True}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    storage = http.server.HTTPServer(("127.0.0.1", 0), Storage)

    class Registry(Storage):
        def do_GET(self):
            seen.setdefault("registry", []).append(self.headers.get("Authorization"))
            if self.headers.get("Authorization") != "Basic dTpw":
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="test"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(307)
            self.send_header("Location", f"http://127.0.0.1:{storage.server_port}/blob")
            self.send_header("Content-Length", "0")
            self.end_headers()

    reg = http.server.HTTPServer(("127.0.0.1", 0), Registry)
    for server in (storage, reg):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(registry, "credentials", lambda host: ("u", "p"))
        client = registry.Client(f"127.0.0.1:{reg.server_port}")
        assert client.get_json("/v2/x/blobs/sha256:1") == {"ok": True}
        assert seen["registry"] == [None, "Basic dTpw"]  # challenged, then answered with the credentials
        assert seen["storage"] is None  # and the storage host never saw them
    finally:
        reg.shutdown()
        storage.shutdown()
