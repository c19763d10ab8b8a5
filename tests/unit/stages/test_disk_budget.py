"""The disk budget of a row's build (issue 19, item 10): computed from the row's size baseline, checked before a
CI build starts, with a message that says what is short and how to fix it."""

from __future__ import annotations

from pathlib import Path

from imagematrix.cli.app import main
from imagematrix.stages import disk_budget, sizes

ROOT = Path(__file__).resolve().parents[3]
ROW = "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311"


def _baseline(size: int) -> sizes.Baseline:
    return sizes.Baseline("r", "sha256:" + "0" * 64, size, ())


def test_the_budget_is_a_multiple_of_the_image_plus_headroom():
    budget = disk_budget.disk_budget(_baseline(8 * 1000**3))
    assert budget.need == int(8 * 1000**3 * disk_budget.DISK_FACTOR) + disk_budget.DISK_HEADROOM
    assert budget.image == 8 * 1000**3 and "sizes/r.json (8.0 GB image)" == budget.basis


def test_a_row_without_a_baseline_assumes_the_default_image():
    for missing in (None, _baseline(0)):
        budget = disk_budget.disk_budget(missing)
        assert budget.image == disk_budget.DEFAULT_IMAGE_BYTES and "no size baseline" in budget.basis


def test_the_recorded_7_8_gb_row_needs_more_than_a_hosted_runner_guarantees():
    budget = disk_budget.disk_budget(sizes.load(sizes.baseline_path(ROOT, ROW)))
    assert 25 * 1000**3 < budget.need < 35 * 1000**3  # 3.5 x 7.77 GB + 2 GiB = 29.3 GB; runners guarantee 14 GB
    assert disk_budget.disk_verdict(ROW, budget, 14 * 1000**3, "/") is not None


def test_the_verdict_passes_at_the_budget_and_fails_below_it_saying_what_and_how():
    budget = disk_budget.disk_budget(_baseline(4 * 1000**3))
    assert disk_budget.disk_verdict("r", budget, budget.need, "/") is None
    message = disk_budget.disk_verdict("r", budget, budget.need - 1, "/var/lib/docker")
    assert message.startswith("row r: ") and "free on /var/lib/docker" in message
    assert f"needs about {disk_budget.gb(budget.need)} GB" in message and "fix: free space first" in message


def test_the_disk_command_exits_1_when_short(tmp_path, monkeypatch, capsys):
    free = {"value": 10**15}
    import imagematrix.cli.disk as disk
    monkeypatch.setattr(disk.shutil, "disk_usage", lambda path: type("U", (), {"free": free["value"]})())
    assert main(["disk", "--row", ROW, "--path", str(tmp_path)]) == 0
    # the committed baseline moves with each rebuild of the row (7.77 GB: about 29.3 GB): the budget, not a literal
    need = disk_budget.disk_budget(sizes.load(sizes.baseline_path(ROOT, ROW))).need
    assert 29 * 1000**3 < need < 30 * 1000**3
    assert f"needs about {disk_budget.gb(need)} GB" in capsys.readouterr().out
    free["value"] = 14 * 1000**3
    assert main(["disk", "--row", ROW, "--path", str(tmp_path)]) == 1
    assert "14.0 GB free" in capsys.readouterr().err
