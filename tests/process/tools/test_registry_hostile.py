"""Issue 26, items 4, 5 and 7, at the registry: a manifest or image config that drips, is huge, lies about its
length, is nested too deep or comes with a garbled status line, and a token that would split a header. Each ends in
one RuntimeFailure line naming the registry, within the patched deadline."""

from __future__ import annotations

import json
import time

import pytest

from imagematrix.model.errors import RuntimeFailure
from imagematrix.tools import http, registry
from tests.support import hostile, serving

MANIFEST = json.dumps({"schemaVersion": 2, "config": {"digest": "sha256:" + "a" * 64, "size": 2}}).encode()
MODES = {"drip": "did not arrive within 1 s", "drip-headers": "did not arrive within 1 s",
         "huge": "over the 1 MiB limit", "huge-unannounced": "over the 1 MiB limit",
         "short": "short of its Content-Length", "bad-status": "BadStatusLine", "hang-up": "unreachable",
         "nested": "not a JSON object", "redirect": "not followed"}


def _body(path: str) -> bytes:
    return MANIFEST if "/manifests/" in path else b" " * 40 + b'{"config": {}}'


@pytest.fixture(autouse=True)
def small_caps(monkeypatch, tmp_path):
    monkeypatch.setattr(http, "MANIFEST_DEADLINE", 1.0)
    monkeypatch.setattr(http, "MANIFEST_LIMIT", 1 << 20)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))  # no credentials


@pytest.mark.parametrize("where", ["manifest", "config"])
@pytest.mark.parametrize("mode", sorted(MODES))
def test_a_hostile_registry_is_one_line_naming_it_within_the_deadline(mode, where):
    """`where`: the manifest misbehaves, or a good manifest points at a config blob that does."""
    handler = hostile(mode, _body, every=0.2, size=8 << 20, only="/manifests/" if where == "manifest" else "/blobs/")
    with serving(handler) as server:
        host = f"127.0.0.1:{server.server_port}"
        started = time.monotonic()
        with pytest.raises(RuntimeFailure) as caught:
            registry.labels(f"{host}/x", "v1")
        assert time.monotonic() - started < 3
    message = str(caught.value)
    assert "\n" not in message and f"registry {host}" in message, message
    assert MODES[mode] in message, message


def test_a_token_with_a_line_break_never_reaches_a_header():
    """However a token with CR/LF got in, the request is not sent and the failure is one line naming the registry."""
    client = registry.Client("127.0.0.1:9")
    client._auth = "Bearer abc\r\nX-Injected: 1"
    with pytest.raises(RuntimeFailure) as caught:
        client.get_json("/v2/x/manifests/v1")
    assert "\n" not in str(caught.value) and "registry 127.0.0.1:9" in str(caught.value)
