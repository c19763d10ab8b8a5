"""bench/compression.py removes its registry namespace and only the blobs no other repository links."""

from __future__ import annotations

from bench import compression


def _link(repos, repo, kind, digest):
    path = repos / repo / "_manifests" / "revisions" if kind == "manifest" else repos / repo / "_layers"
    path = path / "sha256" / digest
    path.mkdir(parents=True)
    (path / "link").write_text(f"sha256:{digest}")


def test_only_the_namespaces_own_blobs_go(tmp_path, monkeypatch):
    blobs = tmp_path / "v2" / "blobs" / "sha256"
    repos = tmp_path / "v2" / "repositories"
    monkeypatch.setattr(compression, "_registry_storage", lambda: blobs)
    shared, own, manifest = "a" * 64, "b" * 64, "c" * 64
    for digest in (shared, own, manifest):
        (blobs / digest[:2] / digest).mkdir(parents=True)
        (blobs / digest[:2] / digest / "data").write_bytes(b"x")
    _link(repos, "imagematrix/verl", "layer", shared)
    _link(repos, "imagematrix-bench-1234/verl", "layer", shared)
    _link(repos, "imagematrix-bench-1234/verl", "layer", own)
    _link(repos, "imagematrix-bench-1234/verl", "manifest", manifest)
    assert compression._drop_namespace("imagematrix-bench-1234") == [f"sha256:{own}", f"sha256:{manifest}"]
    assert not (repos / "imagematrix-bench-1234").exists()
    assert (blobs / shared[:2] / shared / "data").is_file()
    assert not (blobs / own[:2] / own).exists()


def test_a_namespace_not_of_the_bench_is_never_touched(tmp_path, monkeypatch):
    blobs = tmp_path / "v2" / "blobs" / "sha256"
    repos = tmp_path / "v2" / "repositories"
    monkeypatch.setattr(compression, "_registry_storage", lambda: blobs)
    _link(repos, "imagematrix", "layer", "d" * 64)
    assert compression._drop_namespace("imagematrix") == []
    assert (repos / "imagematrix").is_dir()
