"""Issue 26, item 1: a registry's Bearer challenge names the token service (its realm); a hostile registry must not
make the tool read a local file (file://, data:), send the docker config's credentials to another host or over
cleartext, nor take a token that is huge, slow, not JSON or would split a header. Each ends in one RuntimeFailure
naming the registry. Two local HTTP servers play the registry and its token service."""

from __future__ import annotations

import base64
import json
import time
import urllib.parse

import pytest

from imagematrix.model.errors import RuntimeFailure
from imagematrix.tools import http, registry
from tests.support import QuietHandler, serving

CREDS = ("robot", "s3cret-docker-config-password")
BASIC = "Basic " + base64.b64encode(f"{CREDS[0]}:{CREDS[1]}".encode()).decode()
TOKEN = "good.token.value"


class Seen:
    """What each server was sent: (path, Authorization header or None)."""

    def __init__(self):
        self.registry: list[tuple[str, str | None]] = []
        self.token: list[tuple[str, str | None]] = []

    def authorizations(self) -> list[str]:
        return [auth for _, auth in self.registry + self.token if auth]


def _registry(seen: Seen, challenge, token=None):
    """A registry asking every request without `Bearer TOKEN` to authenticate with `challenge` (a str, or a function
    of the server's port); with the token, every manifest is absent (404). token(handler), when given, answers the
    requests for /token: the registry's own token service, on its host and port."""

    class Handler(QuietHandler):
        def do_GET(self):
            auth = self.headers.get("Authorization")
            if token and self.path.startswith("/token"):
                seen.token.append((self.path, auth))
                token(self)
                return
            seen.registry.append((self.path, auth))
            if auth == f"Bearer {TOKEN}":
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(401)
            self.send_header("WWW-Authenticate",
                             challenge(self.server.server_port) if callable(challenge) else challenge)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


def _own_token_service(seen: Seen, answer):
    """A registry whose realm is its own /token (as the embedded registry's, ghcr.io's, quay.io's), answered by
    answer(handler)."""
    return serving(_registry(seen, lambda port: f'Bearer realm="http://127.0.0.1:{port}/token",service="reg"',
                             answer))


def _token_service(seen: Seen, answer):
    """A token service answering `answer(handler)` (it writes the response itself)."""

    class Handler(QuietHandler):
        def do_GET(self):
            seen.token.append((self.path, self.headers.get("Authorization")))
            answer(self)

    return Handler


def _json(handler, body: bytes, *, length: bool = True, status: int = 200):
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    if length:
        handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def _token_ok(handler):
    _json(handler, json.dumps({"token": TOKEN}).encode())


@pytest.fixture
def creds(monkeypatch):
    monkeypatch.setattr(registry, "credentials", lambda host: CREDS)


def _one_line_failure(caught, host: str) -> str:
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message, message
    assert f"registry {host}" in message, message
    return message


def _fetch(host: str):
    return registry.Client(host).get_json("/v2/x/manifests/v1")


@pytest.mark.parametrize("kind", ["planted-file", "dev-zero", "data-url", "ftp"])
def test_a_realm_that_is_no_http_url_is_refused_and_nothing_local_is_read(kind, tmp_path, creds):
    planted = tmp_path / "token.json"
    planted.write_text(json.dumps({"token": "PLANTED-LOCAL-TOKEN"}))
    realm = {"planted-file": f"file://{planted}#", "dev-zero": "file:///dev/zero#",
             "data-url": "data:application/json," + urllib.parse.quote(json.dumps({"token": "PLANTED-LOCAL-TOKEN"}))
             + "#", "ftp": "ftp://127.0.0.1:9/token#"}[kind]
    seen = Seen()
    with serving(_registry(seen, f'Bearer realm="{realm}",service="reg",scope="repository:x:pull"')) as server:
        host = f"127.0.0.1:{server.server_port}"
        with pytest.raises(RuntimeFailure) as caught:
            _fetch(host)
    message = _one_line_failure(caught, host)
    assert "realm" in message and "http" in message, message
    assert seen.registry == [("/v2/x/manifests/v1", None)]  # challenged once, nothing (no planted token) sent back
    assert not any("PLANTED" in auth for auth in seen.authorizations())


def test_a_bearer_challenge_without_a_realm_is_a_one_line_failure(creds):
    seen = Seen()
    with serving(_registry(seen, 'Bearer service="reg",scope="repository:x:pull"')) as server:
        host = f"127.0.0.1:{server.server_port}"
        with pytest.raises(RuntimeFailure) as caught:
            _fetch(host)
    assert "realm" in _one_line_failure(caught, host)


def test_the_credentials_go_to_the_token_service_on_the_registry_itself(creds):
    """The positive case: the realm is on the registry's own host and port."""
    seen = Seen()
    with _own_token_service(seen, _token_ok) as server:
        assert _fetch(f"127.0.0.1:{server.server_port}") is None
    assert seen.token == [("/token?service=reg", BASIC)]
    assert [auth for _, auth in seen.registry] == [None, f"Bearer {TOKEN}"]


def test_a_realm_on_another_host_gets_no_credentials_only_an_anonymous_request(creds):
    seen = Seen()
    with serving(_token_service(seen, _token_ok)) as token:
        realm = f"http://localhost:{token.server_port}/token"
        with serving(_registry(seen, f'Bearer realm="{realm}",service="reg",scope="repository:x:pull"')) as server:
            assert _fetch(f"127.0.0.1:{server.server_port}") is None
    assert [auth for _, auth in seen.token] == [None], seen.token  # asked anonymously
    assert seen.token[0][0] == "/token?service=reg&scope=repository%3Ax%3Apull"
    assert BASIC not in seen.authorizations()


def test_an_http_realm_of_an_https_registry_is_refused_before_any_request(creds):
    """ghcr.io-like registry (HTTPS) naming a cleartext token service: the credentials would cross the wire in the
    clear. Refused before anything is sent (the token service below must stay unasked)."""
    seen = Seen()
    with serving(_token_service(seen, _token_ok)) as token:
        client = registry.Client("registry.example")
        assert client.base.startswith("https://")
        with pytest.raises(RuntimeFailure) as caught:
            client._authenticate(f'Bearer realm="http://127.0.0.1:{token.server_port}/token",service="reg"')
    assert "https" in _one_line_failure(caught, "registry.example")
    assert seen.token == []


@pytest.mark.parametrize(("base", "realm", "expected"), [
    ("https://ghcr.io", "https://ghcr.io/token", ("https://ghcr.io/token", True)),
    ("https://ghcr.io:443", "https://ghcr.io/token", ("https://ghcr.io/token", True)),
    ("https://GHCR.io", "https://ghcr.io:443/token", ("https://ghcr.io:443/token", True)),
    ("https://registry-1.docker.io", "https://auth.docker.io/token", ("https://auth.docker.io/token", True)),
    ("https://ghcr.io", "https://auth.example/token", ("https://auth.example/token", False)),
    ("https://ghcr.io", "https://ghcr.io:8443/token", ("https://ghcr.io:8443/token", False)),
    ("https://ghcr.io", "https://ghcr.io.evil.example/token", ("https://ghcr.io.evil.example/token", False)),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000/token", ("http://127.0.0.1:5000/token", True)),
    ("http://127.0.0.1:5000", "https://127.0.0.1:5000/token", ("https://127.0.0.1:5000/token", True)),
    ("http://127.0.0.1:5000", "http://localhost:5000/token", ("http://localhost:5000/token", False)),
    ("https://ghcr.io", "https://ghcr.io/token?x=1", ("https://ghcr.io/token?x=1", True)),
])
def test_the_realm_policy_accepts(base, realm, expected):
    assert registry.token_service(base, realm) == expected


@pytest.mark.parametrize(("base", "realm", "why"), [
    ("https://ghcr.io", None, "no realm"),
    ("https://ghcr.io", "", "no realm"),
    ("https://ghcr.io", "http://ghcr.io/token", "https"),
    ("https://ghcr.io", "file:///etc/passwd", "http"),
    ("https://ghcr.io", "file:///dev/zero#", "http"),
    ("https://ghcr.io", "FILE:///dev/zero", "http"),
    ("https://ghcr.io", "data:,x", "http"),
    ("https://ghcr.io", "ftp://ghcr.io/token", "http"),
    ("https://ghcr.io", "/token", "http"),
    ("https://ghcr.io", "https:///token", "host"),
    ("https://ghcr.io", "https://ghcr.io/token#", "fragment"),
    ("https://ghcr.io", "https://user:pw@ghcr.io/token", "user"),
    ("https://ghcr.io", "https://ghcr.io/to ken", "URL"),
    ("https://ghcr.io", "https://ghcr.io/token\n", "URL"),
    ("https://ghcr.io", "https://ghcr.io:99999/token", "port"),
    ("https://ghcr.io", " https://ghcr.io/token", "URL"),
])
def test_the_realm_policy_refuses(base, realm, why):
    with pytest.raises(ValueError, match=why):
        registry.token_service(base, realm)


@pytest.mark.parametrize("answer", [
    pytest.param(lambda h: _json(h, json.dumps({"token": "a" * (2 << 20)}).encode()), id="2MiB-with-length"),
    pytest.param(lambda h: _json(h, json.dumps({"token": "a" * (3 << 20)}).encode(), length=False),
                 id="3MiB-without-length"),
])
def test_a_huge_token_answer_is_refused_at_the_cap(answer, creds):
    seen = Seen()
    with _own_token_service(seen, answer) as server:
        host = f"127.0.0.1:{server.server_port}"
        with pytest.raises(RuntimeFailure) as caught:
            _fetch(host)
    assert "MiB" in _one_line_failure(caught, host)
    assert len(seen.registry) == 1  # the huge token was never sent


def _drip(handler):
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.end_headers()
    for byte in json.dumps({"token": TOKEN}).encode():
        handler.wfile.write(bytes([byte]))
        handler.wfile.flush()
        time.sleep(0.2)


def test_a_token_answer_dripping_past_the_deadline_is_refused(creds, monkeypatch):
    monkeypatch.setattr(http, "TOKEN_DEADLINE", 1.0)
    seen = Seen()
    with _own_token_service(seen, _drip) as server:
        host = f"127.0.0.1:{server.server_port}"
        started = time.monotonic()
        with pytest.raises(RuntimeFailure) as caught:
            _fetch(host)
        assert time.monotonic() - started < 3
    assert "1 s" in _one_line_failure(caught, host)


@pytest.mark.parametrize("body", [
    json.dumps({"token": "abc\r\nX-Injected: 1"}).encode(),
    json.dumps({"token": "abc\ndef"}).encode(),
    json.dumps({"access_token": "abc\rdef"}).encode(),
    json.dumps({"token": 12345}).encode(),
    json.dumps({"token": ""}).encode(),
    json.dumps({"other": "x"}).encode(),
    json.dumps(["token"]).encode(),
    b"<html>login</html>",
    b"\xff\xfe garbage",
])
def test_a_token_answer_without_a_clean_string_token_is_a_one_line_failure(body, creds):
    seen = Seen()
    with _own_token_service(seen, lambda h: _json(h, body)) as server:
        host = f"127.0.0.1:{server.server_port}"
        with pytest.raises(RuntimeFailure) as caught:
            _fetch(host)
    assert "token" in _one_line_failure(caught, host)
    assert len(seen.registry) == 1  # nothing was sent back with a broken token


def test_a_token_service_redirecting_to_another_scheme_is_not_followed(creds):
    def redirect(handler):
        handler.send_response(302)
        handler.send_header("Location", "ftp://127.0.0.1:9/token")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    seen = Seen()
    with _own_token_service(seen, redirect) as server:
        host = f"127.0.0.1:{server.server_port}"
        with pytest.raises(RuntimeFailure) as caught:
            _fetch(host)
    assert "redirect" in _one_line_failure(caught, host)
