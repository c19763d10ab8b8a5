"""pick for Grace hosts (issue 29): GH200 and GB200 sit in linux/arm64 hosts, so only rows with a linux/arm64 image
fit, and a tag counts as published for them only when its index has that image."""

from __future__ import annotations

import pytest

from imagematrix.assist import pick
from imagematrix.knowledge import gpus
from imagematrix.model import matrix


@pytest.mark.parametrize(("gpu", "platform"), [("GH200", "linux/arm64"), ("NVIDIA GH200 480GB", "linux/arm64"),
                                               ("GB200", "linux/arm64"), ("H200", "linux/amd64"),
                                               ("H100", "linux/amd64"), ("sm_90", "linux/amd64")])
def test_grace_gpus_sit_in_arm64_hosts(gpu, platform):
    assert gpus.host_platform(gpu) == platform


@pytest.mark.parametrize("gpu", ["GH200", "GB200"])
def test_a_grace_gpu_is_answered_with_an_arm64_capable_row(gpu):
    m = matrix.load()
    result = pick.pick(m, gpu)
    assert result.best is not None and "linux/arm64" in result.best.row.platforms
    assert all("linux/arm64" in c.row.platforms for c in result.candidates)
    amd64_only = [r.id for r in m.rows if "linux/arm64" not in r.platforms]
    assert amd64_only and all("Grace CPU" in " ".join(result.excluded[r]) for r in amd64_only)
    assert "multi-arch index of linux/amd64, linux/arm64" in pick.platforms_line(result.best.row)


def test_published_for_a_grace_host_means_the_index_has_its_image():
    result = pick.pick(matrix.load(), "GH200")
    labels = lambda registry, tag: {"io.imagematrix.row": tag}  # noqa: E731
    amd64_only = pick.publication(result, "r", lookup=labels, signature=lambda r, t: None, platform="linux/arm64",
                                  platforms_of=lambda r, t: {"linux/amd64"})
    assert amd64_only.published is False
    both = pick.publication(result, "r", lookup=labels, signature=lambda r, t: None, platform="linux/arm64",
                            platforms_of=lambda r, t: {"linux/amd64", "linux/arm64"})
    assert both.published is True
