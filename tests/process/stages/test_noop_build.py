"""The no-op `build --all` (issue 30, item 5): every row's tags already carry its input digest. It runs no
resolution and no build, and reads the registry once per tag: each tag's manifest once, each distinct image config
once (a row's tag and its aliases name one image), all rows together. A row the reading beforehand does not let skip
is read again before anything is built. A local HTTP server plays the registry and counts what is asked."""

from __future__ import annotations

import collections
import hashlib
import http.server
import json

import pytest
from rich.console import Console

from imagematrix.cli import build as build_cli
from imagematrix.model import labels, tags
from imagematrix.model import matrix as matrix_mod
from imagematrix.model.errors import RuntimeFailure
from imagematrix.stages import builder, pipeline, render, resolve
from imagematrix.tools import docker, uv
from tests.conftest import ROOT
from tests.support import serving


class Registry:
    """A registry's manifests and configs in memory: images by tag, and every GET counted by path."""

    def __init__(self):
        self.tags: dict[str, bytes] = {}  # tag (or a manifest's digest) -> manifest
        self.blobs: dict[str, bytes] = {}
        self.asked: collections.Counter = collections.Counter()

    def push(self, tag: str, image_labels: dict[str, str], arch: str = "amd64") -> str:
        """An image under tag (and its digest); returns the manifest's digest."""
        config = json.dumps({"architecture": arch, "config": {"Labels": image_labels}}, sort_keys=True).encode()
        digest = "sha256:" + hashlib.sha256(config).hexdigest()
        self.blobs[digest] = config
        manifest = json.dumps({"schemaVersion": 2, "config": {"digest": digest, "size": len(config)},
                               "layers": []}).encode()
        self.tags[tag] = self.tags["sha256:" + hashlib.sha256(manifest).hexdigest()] = manifest
        return "sha256:" + hashlib.sha256(manifest).hexdigest()

    def push_index(self, tag: str, images: dict[str, str]) -> None:
        """A multi-arch index of images {platform: manifest digest} under tag."""
        self.tags[tag] = json.dumps({"schemaVersion": 2, "manifests": [
            {"digest": d, "size": len(self.tags[d]), "platform": {"os": "linux", "architecture": p.split("/")[1]}}
            for p, d in images.items()]}).encode()

    def handler(self):
        registry = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                registry.asked[self.path] += 1
                kind, _, ref = self.path.rpartition("/")
                body = (registry.tags.get(ref) if kind.endswith("/manifests") else
                        registry.blobs.get(ref) if kind.endswith("/blobs") else None)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args):
                pass

        return Handler


@pytest.fixture
def no_work(monkeypatch):
    """Resolution, builds and the docker CLI fail the test; the daemon is taken as running."""

    def forbidden(what):
        def fail(*args, **kwargs):
            raise AssertionError(f"the no-op build ran {what}")
        return fail

    monkeypatch.setattr(docker, "require_daemon", lambda: None)
    monkeypatch.setattr(docker, "run", forbidden("docker"))
    monkeypatch.setattr(uv, "compile_requirements", forbidden("uv"))
    monkeypatch.setattr(resolve, "resolve", forbidden("a resolution"))
    monkeypatch.setattr(builder, "build", forbidden("a build"))
    monkeypatch.setattr(builder, "ensure_base", forbidden("the base stage"))


def _published(m, registry: Registry, skip: frozenset[str] = frozenset()) -> dict[str, list[str]]:
    """Every row's final tags pushed with its input digest (rows in `skip` left out): a multi-platform row's as an
    index of an image per platform, each with its own input digest; the tags by row."""
    contexts, _ = render.render_each(m, list(m.rows), all_platforms=True)
    digests = {(item.row.id, item.platform): item.context_digest() for item in contexts}
    final = tags.published_tags([(r.id, r.vllm) for r in m.rows])
    for row in m.rows:
        if row.id in skip:
            continue
        if len(row.platforms) > 1:
            images = {p: registry.push(f"image-{row.id}-{p.split('/')[1]}", {labels.INPUT_DIGEST: digests[(row.id, p)]},
                                       arch=p.split("/")[1]) for p in row.platforms}
            for tag in final[row.id]:
                registry.push_index(tag, images)
            continue
        for tag in final[row.id]:
            registry.push(tag, {labels.INPUT_DIGEST: digests[(row.id, row.platforms[0])], "io.imagematrix.row": row.id})
    return final


def _publish(m, namespace: str, tmp_path) -> list:
    """`build --all` as the command runs it: the request, and the console's progress (into a file)."""
    request = pipeline.BuildRequest(matrix=m, registry=namespace, log_dir=tmp_path)
    with build_cli.ConsoleProgress(Console(file=open(tmp_path / "out.txt", "w"))) as progress:
        return pipeline.publish(request, list(m.rows), progress)


def test_the_no_op_build_reads_each_tag_once_and_builds_nothing(no_work, tmp_path):
    m = matrix_mod.load(ROOT / "matrix.yaml")
    registry = Registry()
    final = _published(m, registry)
    with serving(registry.handler()) as server:
        namespace = f"127.0.0.1:{server.server_port}/ns"
        outcomes = _publish(m, namespace, tmp_path)
    assert [(o.row, o.status) for o in outcomes] == [(r.id, "skipped") for r in m.rows]
    manifests = {path: n for path, n in registry.asked.items() if "/manifests/" in path and "sha256:" not in path}
    images = {path: n for path, n in registry.asked.items() if "/manifests/sha256:" in path}
    blobs = {path: n for path, n in registry.asked.items() if "/blobs/" in path}
    assert manifests == {f"/v2/ns/verl/manifests/{tag}": 1 for row_tags in final.values() for tag in row_tags}
    multi = [r for r in m.rows if len(r.platforms) > 1]
    assert multi and len(images) == sum(len(r.platforms) for r in multi) and set(images.values()) == {1}
    # each image's config once: a row's, its aliases share it; a multi-platform row's, one per platform
    assert len(blobs) == sum(len(r.platforms) for r in m.rows) and set(blobs.values()) == {1}


def test_a_row_the_first_reading_does_not_skip_is_read_again_before_its_build(no_work, tmp_path, monkeypatch):
    m = matrix_mod.load(ROOT / "matrix.yaml")
    first, second = m.rows[0], m.rows[1]
    registry = Registry()
    final = _published(m, registry, skip=frozenset({first.id, second.id}))
    digests = {item.row.id: item.context_digest() for item in render.render(m, [first])}
    read_at_start = pipeline.remote_labels_of

    def then_pushed(namespace, tag_list):  # another job pushes the first row just after the reading
        found = read_at_start(namespace, tag_list)
        for tag in final[first.id]:
            registry.push(tag, {labels.INPUT_DIGEST: digests[first.id]})
        return found

    monkeypatch.setattr(pipeline, "remote_labels_of", then_pushed)

    def stop(*args, **kwargs):
        raise RuntimeFailure("stopped here by the test")

    monkeypatch.setattr(builder, "ensure_base", stop)
    with serving(registry.handler()) as server:
        outcomes = _publish(m, f"127.0.0.1:{server.server_port}/ns", tmp_path)
    status = {o.row: (o.status, o.stage) for o in outcomes}
    assert status[first.id] == ("skipped", "check")  # current when read again
    assert status[second.id] == ("failed", "base")  # still absent: on to its build
    assert registry.asked[f"/v2/ns/verl/manifests/{first.id}"] == 2
    assert registry.asked[f"/v2/ns/verl/manifests/{second.id}"] == 2
    assert all(s == ("skipped", "check") for row_id, s in status.items() if row_id not in (first.id, second.id))
