"""The multi-arch index a multi-platform row is pushed as (issue 29): what put_index writes, what platform_labels
reads back. The registry is a dict behind Client.request (no socket)."""

from __future__ import annotations

import hashlib
import json

import pytest

from imagematrix.model.errors import RuntimeFailure
from imagematrix.tools import registry

MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def _digest(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


class Store:
    def __init__(self):
        self.manifests, self.blobs, self.puts = {}, {}, []

    def image(self, arch: str, input_digest: str) -> str:
        config = json.dumps({"architecture": arch, "config": {"Labels": {"io.imagematrix.input-digest": input_digest}}}).encode()
        self.blobs[_digest(config)] = config
        body = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST, "config": {"digest": _digest(config), "size": len(config)},
                           "layers": []}).encode()
        self.manifests[_digest(body)] = (body, MANIFEST)
        return _digest(body)

    def request(self, method, path, *, accept=None, data=None, content_type=None, sink=None):
        ref = path.rsplit("/", 1)[-1]
        if method == "PUT":
            self.puts.append(ref)
            self.manifests[ref] = self.manifests[_digest(data)] = (data, content_type)
            return b"", {}
        if "/blobs/" in path:
            return (self.blobs[ref], {}) if ref in self.blobs else None
        found = self.manifests.get(ref)
        return None if found is None else (found[0], {"Content-Type": found[1]})


@pytest.fixture
def store(monkeypatch):
    s = Store()
    monkeypatch.setattr(registry.Client, "request", lambda self, *a, **k: s.request(*a, **k))
    return s


def test_an_index_of_both_platforms_is_put_under_each_tag_and_read_back(store):
    amd64, arm64 = store.image("amd64", "sha256:a"), store.image("arm64", "sha256:b")
    index = registry.put_index("127.0.0.1:5000/imagematrix/verl", ["row", "vllm0.31.0"],
                               [("linux/amd64", amd64), ("linux/arm64", arm64)])
    assert store.puts == ["row", "vllm0.31.0"]
    body, media = store.manifests["row"]
    assert _digest(body) == index and media == registry.INDEX_MEDIA
    doc = json.loads(body)
    assert [(m["platform"]["architecture"], m["digest"], m["size"], m["mediaType"]) for m in doc["manifests"]] == [
        ("amd64", amd64, len(store.manifests[amd64][0]), MANIFEST), ("arm64", arm64, len(store.manifests[arm64][0]), MANIFEST)]
    assert registry.platform_labels("127.0.0.1:5000/imagematrix/verl", "row") == {
        "linux/amd64": {"io.imagematrix.input-digest": "sha256:a"}, "linux/arm64": {"io.imagematrix.input-digest": "sha256:b"}}
    # the labels every single-platform reader takes from a tag are the amd64 image's
    assert registry.labels("127.0.0.1:5000/imagematrix/verl", "row") == {"io.imagematrix.input-digest": "sha256:a"}


def test_a_single_image_tag_reads_as_its_one_platform_and_an_absent_one_as_none(store):
    store.manifests["solo"] = store.manifests[store.image("amd64", "sha256:c")]
    assert registry.platform_labels("127.0.0.1:5000/x", "solo") == {"linux/amd64": {"io.imagematrix.input-digest": "sha256:c"}}
    assert registry.platform_labels("127.0.0.1:5000/x", "gone") is None


def test_an_index_is_refused_for_an_image_the_registry_lacks(store):
    with pytest.raises(RuntimeFailure, match="push it first"):
        registry.put_index("127.0.0.1:5000/x", ["row"], [("linux/arm64", "sha256:" + "0" * 64)])
