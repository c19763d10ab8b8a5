"""promote of a multi-platform row (issue 29): its final tags become one index of its amd64 candidate and its
arm64 candidate (CI's build-platforms job), each carrying its platform's input digest; else it is held back."""

from __future__ import annotations

from rich.console import Console

from imagematrix.model import matrix as matrix_mod
from imagematrix.stages import promote, render

ROW_ID = "verl0.9.1-vllm0.24.0-torch2.11.0-cu130-py311"


def _setup(monkeypatch, arm64_present: bool):
    m = matrix_mod.load()
    row = m.select([ROW_ID])[0]
    digests = {p: render.render_one(m, row, p).context_digest() for p in row.platforms}
    held = {promote.tags.candidate_tag(row.id, d): (f"sha256:{p[-2:]}" + "0" * 62, p, d) for p, d in digests.items()
            if arm64_present or p == "linux/amd64"}
    put = []
    monkeypatch.setattr(promote, "remote_labels", lambda registry, tag: {"io.imagematrix.input-digest": held[tag][2]}
                        if tag in held else None)
    monkeypatch.setattr(promote.registry_api, "platform_state", lambda repo, tag: (
        held[tag][0], {held[tag][1]: {"io.imagematrix.input-digest": held[tag][2]}}) if tag in held else None)
    monkeypatch.setattr(promote.registry_api, "put_index", lambda repo, tags_, images: put.append((tags_, images))
                        or "sha256:" + "f" * 64)
    monkeypatch.setattr(promote.registry_api, "retag", lambda *a: put.append(("retag", a)))
    return m, row, put


def test_both_candidates_become_one_index_under_the_final_tags(monkeypatch):
    m, row, put = _setup(monkeypatch, arm64_present=True)
    (outcome,) = promote.promote(m, [row], "r/o", Console(file=open("/dev/null", "w")))
    assert outcome.status == "pushed" and "index sha256:ffffffff" in outcome.detail
    (tags_, images), = put
    assert ROW_ID in tags_ and [p for p, _ in images] == ["linux/amd64", "linux/arm64"]


def test_without_its_arm64_candidate_the_row_is_held_back(monkeypatch):
    m, row, put = _setup(monkeypatch, arm64_present=False)
    (outcome,) = promote.promote(m, [row], "r/o", Console(file=open("/dev/null", "w")))
    assert outcome.status == "failed" and "no linux/arm64 candidate" in outcome.detail and "--platform" in outcome.detail
    assert put == []  # no final tag moved, not even amd64's alone


def test_zstd_is_not_done_for_a_multi_arch_row(monkeypatch):
    m, row, put = _setup(monkeypatch, arm64_present=True)
    (outcome,) = promote.promote(m, [row], "r/o", Console(file=open("/dev/null", "w")), compression="zstd")
    assert outcome.status == "failed" and "gzip layers and unsigned only" in outcome.detail and put == []
