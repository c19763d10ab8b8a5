"""A registry (or a proxy in front of one) that answers garbage, and a docker config with a broken inline auth:
each ends in one RuntimeFailure naming where the garbage came from, never a traceback."""

from __future__ import annotations

import base64
import json

import pytest

from imagematrix.model.errors import RuntimeFailure
from imagematrix.tools import registry
from tests.support import answering, serving


@pytest.mark.parametrize("body", [b"<html>captive portal</html>", b"\xff\xfe\x00garbage", b"[1, 2]", b'"manifests"',
                                  b"null", b'{"schemaVersion": 2}'])
def test_a_registry_answering_garbage_is_a_runtime_failure_naming_host_and_path(body):
    with serving(answering(body, "application/json")) as server:
        host = f"127.0.0.1:{server.server_port}"
        with pytest.raises(RuntimeFailure) as caught:
            registry.labels(f"{host}/imagematrix/verl", "v1")
        message = str(caught.value)
        assert host in message and "/v2/imagematrix/verl/manifests/v1" in message, message
        assert "\n" not in message
        if not body.startswith(b"{"):  # not an object at all: refused whatever the path
            with pytest.raises(RuntimeFailure, match=r"/v2/x/blobs/sha256:1"):
                registry.Client(host).get_json("/v2/x/blobs/sha256:1")


def test_a_manifest_whose_config_is_garbage_names_the_blob_path():
    manifest = {"schemaVersion": 2, "config": {"digest": "sha256:abc"}}
    answer = answering(lambda path: json.dumps(manifest).encode() if "/manifests/" in path else b"not json",
                       "application/json")
    with serving(answer) as server, pytest.raises(RuntimeFailure, match=r"/v2/x/blobs/sha256:abc"):
        registry.Client(f"127.0.0.1:{server.server_port}").labels("x", "v1")


@pytest.mark.parametrize("auth", ["not base64!!", base64.b64encode(b"no-colon-here").decode(),
                                  base64.b64encode(b"\xff\xfe:x").decode(), 42])
def test_a_broken_inline_auth_in_the_docker_config_is_a_runtime_failure(tmp_path, monkeypatch, auth):
    (tmp_path / "config.json").write_text(json.dumps({"auths": {"reg.example:5001": {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    with pytest.raises(RuntimeFailure) as caught:
        registry.credentials("reg.example:5001")
    assert str(caught.value) == (f"docker config {tmp_path / 'config.json'}: auth for reg.example:5001 is not base64 "
                                 "user:password; fix: docker login reg.example:5001")
