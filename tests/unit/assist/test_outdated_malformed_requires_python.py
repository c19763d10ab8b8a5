"""Issue 26, item 7: one release on the index whose Requires-Python is no version specifier ("=>3.10", a typo real
indexes carry) used to kill all of `outdated` (InvalidSpecifier, an internal error). That release is left out with
a note, the rest of the report stands; validate's check of a pinned release says so in one line."""

from __future__ import annotations

import dataclasses
import json

import pytest

from imagematrix.assist import index_snapshot, outdated, pairing
from imagematrix.cli import outdated as cli_outdated
from imagematrix.knowledge import requires_python
from imagematrix.model import matrix as matrix_mod
from imagematrix.model.errors import RuntimeFailure
from tests.unit.assist.test_outdated import MATRIX, NOW, FakeResolver, snapshot

BAD = "=>3.10"
OLDER = MATRIX.replace('verl: "0.9.1"', 'verl: "0.8.0"').replace('"0.24.0"', '"0.12.0"')  # new verls and vLLMs


def _with_malformed(data: dict) -> dict:
    """A saved snapshot (as an earlier version wrote it, unfiltered) in which vLLM 0.31.0 declares BAD."""
    for entry in data["releases"]["vllm"]:
        if entry["version"] == "0.31.0":
            entry["requires_python"] = BAD
    return data


def test_a_malformed_release_is_left_out_with_a_note(write_matrix):
    shot = index_snapshot.Snapshot.from_json(_with_malformed(snapshot().to_json()))
    assert "0.31.0" not in [r.version for r in shot.releases["vllm"]]
    assert shot.notes == [f"vllm 0.31.0 skipped: the index declares Requires-Python '{BAD}', which is not a version "
                          "specifier"]
    rows = matrix_mod.load(write_matrix(OLDER)).rows
    report = outdated.build_report(rows, shot, FakeResolver(), python="3.11", now=NOW, jobs=1)
    assert "0.31.0" not in [o.version for o in report.outcomes] and report.outcomes
    data = json.loads(cli_outdated.render_json(report))
    assert data["notes"] == shot.notes
    assert index_snapshot.Snapshot.from_json(shot.to_json()).notes == shot.notes  # saved and read back once


def test_outdated_offline_over_a_snapshot_with_a_malformed_release_reports_the_rest(run, write_matrix, tmp_path,
                                                                                    monkeypatch):
    monkeypatch.setenv("IMAGEMATRIX_CACHE", str(tmp_path / "cache"))
    path = index_snapshot.cache_path()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(_with_malformed(snapshot().to_json())))
    result = run("outdated", "--offline", "--matrix", write_matrix(OLDER))
    assert result.code in (0, 1), result
    assert "internal error" not in result.err and "Traceback" not in result.err, result.err
    assert f"note: vllm 0.31.0 skipped: the index declares Requires-Python '{BAD}'" in result.err


def test_a_malformed_requires_python_fits_no_python():
    assert pairing.fits(">=3.10", "3.11") and pairing.fits("", "3.11")
    assert not pairing.fits(">=3.12", "3.11") and not pairing.fits(BAD, "3.11")


def test_a_pinned_release_with_a_malformed_requires_python_is_one_line(write_matrix, monkeypatch):
    row = matrix_mod.load(write_matrix(MATRIX)).rows[0]
    monkeypatch.setattr(requires_python.requires.pypi, "requires_python",
                        lambda package, version: BAD if package == "vllm" else "")
    with pytest.raises(RuntimeFailure) as caught:
        requires_python.check(row)
    message = str(caught.value)
    assert "\n" not in message and f"Requires-Python '{BAD}' for vllm 0.24.0" in message and row.id in message


def test_a_fresh_read_leaves_the_malformed_release_out_too():
    releases = {"vllm": [dataclasses.replace(r, requires_python=BAD) if r.version == "0.25.0" else r
                         for r in snapshot().releases["vllm"]]}
    fresh = index_snapshot.Snapshot(fetched=NOW.isoformat(), index="https://pypi.org/simple", releases=releases,
                                    vllm_ranges={})
    assert [r.version for r in fresh.releases["vllm"]] == ["0.33.0", "0.31.0", "0.24.0", "0.12.0"]
    assert len(fresh.notes) == 1 and "vllm 0.25.0" in fresh.notes[0]
