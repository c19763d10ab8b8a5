"""`build.py outdated` against the real index (network: skipped, saying so, when the index cannot be reached)."""

from __future__ import annotations

import json
import urllib.request

import pytest

from imagematrix.assist import index_snapshot, outdated
from imagematrix.model import matrix as matrix_mod
from imagematrix.tools import pypi

pytestmark = pytest.mark.network


@pytest.fixture(scope="module", autouse=True)
def index_reachable():
    url = f"{pypi.index_url()}/verl/"
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=15).close()
    except OSError as exc:
        pytest.skip(f"the package index is unreachable ({exc}): outdated reads it")


def test_outdated_json_limit_1_against_the_index(run, project_copy):
    result = run("outdated", "--json", "--limit", "1", "--matrix", project_copy)
    assert result.code in (0, 1), result
    data = json.loads(result.out)
    assert data["exit"] == result.code and data["offline"] is False
    assert set(data["packages"]) == set(index_snapshot.PACKAGES)
    have = outdated.covered(matrix_mod.load(project_copy).rows)
    for package, entry in data["packages"].items():
        assert entry["matrix"] == have[package] and len(entry["newer"]) <= 1
    assert len(data["rows"]) == len(data["packages"]["vllm"]["newer"]) + len(data["packages"]["verl"]["newer"])
    for row in data["rows"]:
        assert (row["row"] is None) != (row["reason"] is None) or row["in_matrix"], row
        if row["row"]:
            assert row["row"]["pins"]["python"] == "3.11" and row["row"]["id"].startswith(f"verl{row['row']['pins']['verl']}-")
    assert (data["addable"] > 0) == (result.code == 1)
    # what the run read is cached: offline gives the same answer without asking uv
    again = run("outdated", "--json", "--limit", "1", "--offline", "--matrix", project_copy)
    assert again.code == result.code and "ago" in again.err, again
    offline = json.loads(again.out)
    assert offline["rows"] == data["rows"] and offline["resolutions"]["asked"] == 0
