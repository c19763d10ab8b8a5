"""add-row against PyPI and uv (network): the proposal, the appended row, its lock and context, and refusals."""

from __future__ import annotations

import pytest
from ruamel.yaml import YAML

from imagematrix.assist import addrow, pairing
from imagematrix.knowledge import verl
from imagematrix.model import matrix as matrix_mod

pytestmark = pytest.mark.network


def test_proposal_follows_vllm_torch_and_the_era_constraint():
    proposal = addrow.propose("0.9.2", "3.11")
    pins = proposal.pins
    assert pins["torch"] == "2.7.0" and pins["cuda"] == "12.6"  # vLLM 0.9.2 pins torch 2.7.0 (cu126 on PyPI)
    # the newest verl is tried first but does not resolve with vLLM 0.9.2 even without its [vllm] extra
    # (transformers<5 below), so the proposal falls back to an older verl whose extra declares 0.9.2
    assert verl.vllm_range(pins["verl"]).contains("0.9.2") and not proposal.overrides
    assert int(pins["transformers"].split(".")[0]) == 4  # vLLM <= 0.11 breaks on transformers 5
    assert "transformers<5" in proposal.why["transformers"]


def test_the_newest_verl_without_its_extra_and_an_override_comes_before_an_older_declared_pairing():
    """The issue's measured case: verl 0.9.1's [vllm] extra pins vllm==0.24.0, yet without it verl 0.9.1 installs
    with vLLM 0.31.0. verl 0.9.0's extra (>=0.18.0) admits 0.31.0 and resolves too, and the order before was
    declared pairings first (verl 0.9.0); now the newest verl is tried first, so 0.9.1 with an override."""
    newest = str(pairing.LiveIndex().versions("verl")[0])
    assert newest == "0.9.1"  # a newer verl changes what this test measures: update it
    proposal = addrow.propose("0.31.0", "3.11")
    assert proposal.pins["verl"] == "0.9.1" and proposal.pins["vllm"] == "0.31.0"
    assert not verl.vllm_range("0.9.1").contains("0.31.0") and verl.vllm_range("0.9.0").contains("0.31.0")
    assert "verl 0.9.1 declares vllm==0.24.0" in proposal.overrides["vllm"]


def test_add_row_appends_locks_and_renders_keeping_the_file(run, project_copy):
    before = project_copy.read_text()
    rows_before = len(matrix_mod.load(project_copy).rows)
    result = run("add-row", "--vllm", "0.9.2", "--matrix", project_copy)
    assert result.code == 0, result
    after = project_copy.read_text()
    assert after.startswith(before.rstrip("\n"))  # every byte of the old file kept, comments included
    m = matrix_mod.load(project_copy)
    assert len(m.rows) == rows_before + 1
    row = m.rows[-1]
    assert (row.vllm, row.torch, row.python) == ("0.9.2", "2.7.0", "3.11")
    assert (project_copy.parent / "locks" / f"{row.id}.txt").is_file()
    assert (project_copy.parent / "dockerfiles" / "generated" / row.id / "Dockerfile").is_file()
    raw = YAML(typ="safe").load(after)["rows"][-1]
    assert all(isinstance(v, str) for k, v in raw.items() if k != "extras")  # quoted pins, as the matrix requires
    # this stack resolves numpy 1.x, so the proposal pins pyarrow below 26 (rule pyarrow-26-numpy-1)
    assert int(raw["extras"]["pyarrow"].split(".")[0]) < 26
    assert run("validate", "--matrix", project_copy, "--row", row.id).code == 0


@pytest.mark.parametrize(("args", "message"), [
    (["--vllm", "0.0.99"], "has no wheel on the index"),
    (["--vllm", "0.9.2", "--python", "3.8"], "requires Python"),
    (["--vllm", "0.8.0"], "cannot be installed"),  # xgrammar 0.1.16, which it pins, is gone from PyPI
    (["--vllm", "0.7.2", "--verl", "0.3.0.post1"], "already has row"),
])
def test_refusals_write_nothing(run, project_copy, args, message):
    before = project_copy.read_text()
    locks = sorted(p.name for p in (project_copy.parent / "locks").iterdir())
    result = run("add-row", *args, "--matrix", project_copy)
    assert result.code == 2 and message in result.err, result
    assert project_copy.read_text() == before
    assert sorted(p.name for p in (project_copy.parent / "locks").iterdir()) == locks
    assert not (project_copy.parent / "dockerfiles").exists()


def test_dry_run_writes_nothing(run, project_copy):
    before = project_copy.read_text()
    result = run("add-row", "--vllm", "0.9.2", "--dry-run", "--matrix", project_copy)
    assert result.code == 0 and '- verl: "' in result.out and "dry run" in result.out
    assert project_copy.read_text() == before
