"""Published debootstrap bases (issue 19, item 1): the recorded digest, the rendered FROM, the build argument,
recording the digest in knowledge/bases.yaml, and what ensure_base does where it cannot bootstrap."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagematrix.model import fields
from imagematrix.model import matrix as matrix_mod
from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.stages import bases, builder, render

ROOT = Path(__file__).resolve().parents[3]
DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
def published(monkeypatch):
    suites = {name: dict(s) for name, s in fields.bootstrap_suites().items()}
    suites["bookworm"]["digest"] = DIGEST
    monkeypatch.setattr(fields, "bootstrap_suites", lambda: suites)
    return matrix_mod.load(ROOT / "matrix.yaml")


def test_a_published_suite_renders_from_the_registry_by_digest_and_changes_the_input_digest(published):
    row = published.rows[0]
    before = render.render(published, [row])[0]
    assert row.base_digest == DIGEST and row.base_ref("r.example/o/") == f"r.example/o/imagematrix-base@{DIGEST}"
    text = before.files["Dockerfile"].decode()
    assert f"FROM ${{BASE_REGISTRY}}/imagematrix-base@{DIGEST} AS os" in text
    assert "ARG BASE_REGISTRY=127.0.0.1:5000/imagematrix" in text.split("FROM", 1)[0], "a global ARG, before FROM"
    assert "imagematrix-base:bookworm" not in text
    fields.bootstrap_suites()["bookworm"]["digest"] = "sha256:" + "cd" * 32
    after = render.render(published, [row])[0]
    assert after.context_digest() != before.context_digest(), "the base's digest is part of the row's identity"


def test_an_unpublished_suite_renders_the_local_image_as_before():
    m = matrix_mod.load(ROOT / "matrix.yaml")
    row = m.rows[0]
    assert row.base_digest is None and row.base_ref("r.example/o") == "imagematrix-base:bookworm"
    assert "FROM imagematrix-base:bookworm AS os" in render.render(m, [row])[0].files["Dockerfile"].decode()
    assert builder.base_build_args(row, "r.example/o") == {}


def test_the_build_argument_names_the_registry(published):
    assert builder.base_build_args(published.rows[0], "r.example/o/") == {"BASE_REGISTRY": "r.example/o"}


def test_a_malformed_digest_in_bases_yaml_is_bad_input():
    with pytest.raises(Exception) as exc:
        fields.Suite.model_validate({"distro": "debian", "mirror": "http://m", "python": ["3.11"], "digest": "sha256:xyz"})
    assert "manifest digest" in str(exc.value)


def test_record_writes_the_digest_under_the_suite_keeping_comments(tmp_path, monkeypatch):
    path = tmp_path / "bases.yaml"
    path.write_text((ROOT / "knowledge" / "bases.yaml").read_text())
    assert bases.record_base_digest("bookworm", DIGEST, path)
    text = path.read_text()
    assert text.startswith("# Bases that") and f"    digest: {DIGEST}" in text
    block = text.split("  bookworm:", 1)[1].split("  trixie:", 1)[0]
    assert f"digest: {DIGEST}" in block and 'python: ["3.11"]' in block
    assert not bases.record_base_digest("bookworm", DIGEST, path), "the same digest again changes nothing"
    other = "sha256:" + "cd" * 32
    assert bases.record_base_digest("bookworm", other, path)
    assert path.read_text().count("digest: sha256:") == 1 and other in path.read_text()
    bases.record_base_digest("noble", DIGEST, path)  # the last suite of the file
    from imagematrix.model import yamlio
    data = yamlio.load(path)["debootstrap"]
    assert data["bookworm"]["digest"] == other and data["noble"]["digest"] == DIGEST
    assert "digest" not in data["trixie"]
    with pytest.raises(InputError):
        bases.record_base_digest("bookworm", "sha256:short", path)
    with pytest.raises(InputError):
        bases.record_base_digest("nosuch", DIGEST, path)


def test_a_published_base_is_taken_from_the_registry_without_bootstrapping(published, monkeypatch):
    asked = []
    monkeypatch.setattr(builder.registry_api, "digest", lambda repo, ref: asked.append((repo, ref)) or DIGEST)
    monkeypatch.setattr(builder.debootstrap, "bootstrap", lambda *a, **k: pytest.fail("bootstrapped"))
    monkeypatch.setattr(builder.docker, "pull", lambda *a: pytest.fail("pulled: BuildKit pulls the base"))
    ref = builder.ensure_base(published.rows[0], builder.BuildInputs(), lambda msg: None, "r.example/o")
    assert ref == f"r.example/o/imagematrix-base@{DIGEST}" and asked == [("r.example/o/imagematrix-base", DIGEST)]


def test_a_published_base_absent_from_the_registry_fails_with_both_fixes(published, monkeypatch):
    monkeypatch.setattr(builder.registry_api, "digest", lambda repo, ref: None)
    with pytest.raises(RuntimeFailure) as exc:
        builder.ensure_base(published.rows[0], builder.BuildInputs(), lambda msg: None, "r.example/o")
    text = str(exc.value)
    assert "stage base" in text and f"no r.example/o/imagematrix-base@{DIGEST}" in text
    assert f"skopeo copy docker://OTHER/imagematrix-base@{DIGEST} docker://r.example/o/imagematrix-base:bookworm" in text
    assert "build.py base --suite bookworm --registry r.example/o --record" in text


@pytest.mark.parametrize("root, has_debootstrap, why", [
    (False, True, "debootstrap needs root and this process runs as uid 1001"),
    (True, False, "debootstrap is not installed"),
])
def test_an_unpublished_base_where_bootstrapping_is_impossible(monkeypatch, root, has_debootstrap, why):
    row = matrix_mod.load(ROOT / "matrix.yaml").rows[0]
    monkeypatch.setattr(builder.os, "geteuid", lambda: 0 if root else 1001)
    monkeypatch.setattr(builder.debootstrap, "available", lambda: has_debootstrap)
    monkeypatch.setattr(builder.docker, "image_exists", lambda ref: False)
    monkeypatch.setattr(builder.debootstrap, "bootstrap", lambda *a, **k: pytest.fail("bootstrapped"))
    with pytest.raises(RuntimeFailure) as exc:
        builder.ensure_base(row, builder.BuildInputs(), lambda msg: None, "r.example/o")
    text = str(exc.value)
    assert f"cannot bootstrap it: {why}" in text and "--record" in text and "stage base" in text


def test_publish_refuses_to_bootstrap_without_root(monkeypatch):
    monkeypatch.setattr(builder.os, "geteuid", lambda: 1001)
    monkeypatch.setattr(builder.debootstrap, "available", lambda: True)
    with pytest.raises(RuntimeFailure, match="needs root"):
        bases.publish_base("bookworm", "r.example/o", builder.BuildInputs(), lambda msg: None)
