"""The no-op metric's stand-ins for a multi-platform row (issue 29 met issue 30): such a row is published as one
index of its platforms' images, so the bench reads each other platform's input digest from the snapshot's rendered
records; a bench that pushed single images made `build --all` build the vLLM 0.24 row for real (CI, 2026-12-07)."""

from __future__ import annotations

import json

from bench import quick


def test_other_platforms_come_from_the_rendered_records(tmp_path):
    generated = tmp_path / "dockerfiles" / "generated"
    generated.mkdir(parents=True)
    (generated / "row-a.inputs").write_text(json.dumps({"context": "sha256:" + "a" * 64}))
    (generated / "row-a@linux-arm64.inputs").write_text(json.dumps({"context": "sha256:" + "b" * 64}))
    (generated / "row-a-x2@linux-arm64.inputs").write_text(json.dumps({"context": "sha256:" + "c" * 64}))
    assert quick._other_platforms(tmp_path, "row-a") == [("linux/arm64", "sha256:" + "b" * 64)]
    assert quick._other_platforms(tmp_path, "row-a-x2") == [("linux/arm64", "sha256:" + "c" * 64)]
    assert quick._other_platforms(tmp_path, "row-b") == []
