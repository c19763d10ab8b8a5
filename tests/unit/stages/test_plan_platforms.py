"""CI's linux/arm64 images (issue 29): the plan's build-platforms matrix, and `build --platform` on its own route."""

from __future__ import annotations

import pytest

from imagematrix.model import matrix as matrix_mod
from imagematrix.model.errors import InputError
from imagematrix.stages import disk_budget, pipeline, plan, publish
from tests.conftest import ROOT

ARM_ROWS = {"verl0.9.1-vllm0.24.0-torch2.11.0-cu130-py311", "verl0.9.1-vllm0.31.0-torch2.13.0-cu130-py311"}


def test_the_platform_matrix_has_each_arm64_image_on_a_native_arm64_runner():
    m = matrix_mod.load(ROOT / "matrix.yaml")
    planned = plan.plan(m, list(m.rows), "r.example/o", ask_registry=False)
    entries = plan.platform_matrix(m, planned, "r.example/o", ask_registry=False)["include"]
    assert {e["row"] for e in entries} == ARM_ROWS
    assert all(e["platform"] == "linux/arm64" and e["runner"] == "ubuntu-24.04-arm" for e in entries)
    amd64 = {p.row.id: p.candidate for p in planned}
    assert all(e["candidate"] != amd64[e["row"]] for e in entries)  # the arm64 image's own input digest


def test_an_arm64_image_the_index_already_holds_is_not_planned(monkeypatch):
    m = matrix_mod.load(ROOT / "matrix.yaml")
    planned = plan.plan(m, m.select(sorted(ARM_ROWS)), "r.example/o", ask_registry=False)
    first = plan.platform_matrix(m, planned, "r.example/o", ask_registry=False)["include"]
    held = {e["row"]: e["candidate"].rsplit("-", 1)[1] for e in first}

    def labels(registry, tag):
        from imagematrix.stages import render

        row = m.select([tag])[0]
        return {"linux/arm64": {"io.imagematrix.input-digest": render.render_one(m, row, "linux/arm64").context_digest()}}

    monkeypatch.setattr(publish, "remote_platform_labels", labels)
    assert plan.platform_matrix(m, planned, "r.example/o")["include"] == []
    assert len(plan.platform_matrix(m, planned, "r.example/o", everything=True)["include"]) == len(held)


def test_one_platform_is_never_pushed_as_the_final_tag(tmp_path):
    m = matrix_mod.load(ROOT / "matrix.yaml")
    with pytest.raises(InputError, match="multi-arch"):
        pipeline.BuildRequest(matrix=m, registry="r", log_dir=tmp_path, platform="linux/arm64")
    assert pipeline.BuildRequest(matrix=m, registry="r", log_dir=tmp_path, platform="linux/arm64", push="candidate")


def test_the_disk_budget_of_a_multi_platform_row_counts_each_image(tmp_path):
    from imagematrix.stages import sizes

    (tmp_path / "sizes").mkdir()
    (tmp_path / "sizes" / "row.json").write_text(
        sizes.to_json(sizes.Baseline("row", "sha256:a", 10 * 1000**3, (), "2026-12-07T00:00:00Z")))
    one = disk_budget.platforms_budget(tmp_path, "row", ["row"])
    both = disk_budget.platforms_budget(tmp_path, "row", ["row", "row@linux-arm64"])
    assert both.need == 2 * one.need and "row@linux-arm64 has no baseline" in both.basis
