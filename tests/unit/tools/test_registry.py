"""Registry client: where references point and where credentials come from (the docker config; no network)."""

from __future__ import annotations

import base64
import json

import pytest

from imagematrix.tools import registry


@pytest.mark.parametrize(("ref", "expected"), [
    ("127.0.0.1:5000/imagematrix/verl", ("127.0.0.1:5000", "imagematrix/verl")),
    ("localhost/x/verl", ("localhost", "x/verl")),
    ("ghcr.io/org/verl", ("ghcr.io", "org/verl")),
    ("org/verl", ("registry-1.docker.io", "org/verl")),
    ("verl", ("registry-1.docker.io", "library/verl")),
])
def test_split(ref, expected):
    assert registry.split(ref) == expected


def test_loopback_registries_are_spoken_to_over_http():
    assert registry.Client("127.0.0.1:5000").base == "http://127.0.0.1:5000"
    assert registry.Client("ghcr.io").base == "https://ghcr.io"


def _config(tmp_path, monkeypatch, content: dict):
    (tmp_path / "config.json").write_text(json.dumps(content))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))


def test_inline_credentials_from_docker_login(tmp_path, monkeypatch):
    _config(tmp_path, monkeypatch, {"auths": {"reg.example:5001": {"auth": base64.b64encode(b"me:s3:cret").decode()}}})
    assert registry.credentials("reg.example:5001") == ("me", "s3:cret")
    assert registry.credentials("other.example") is None


def test_docker_hub_uses_its_legacy_key(tmp_path, monkeypatch):
    _config(tmp_path, monkeypatch, {"auths": {registry.DOCKER_HUB: {"auth": base64.b64encode(b"u:p").decode()}}})
    assert registry.credentials("registry-1.docker.io") == ("u", "p")


def test_no_docker_config_means_no_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "absent"))
    assert registry.credentials("ghcr.io") is None
