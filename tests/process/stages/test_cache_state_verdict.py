"""validate's verdict does not depend on uv's cache (issue 13, item 1): a cached index page older than a release
(1b) and a cold cache against a warm one (1e) give the verdict of the network resolution. The real uv against a
local index served from a temporary directory; nothing needs the network."""

from __future__ import annotations

from functools import partial

import pytest

from imagematrix.model import lockfile
from imagematrix.model import matrix as matrix_mod
from imagematrix.stages import resolve, validate
from imagematrix.tools import uv
from tests.conftest import GOOD_MATRIX, ROOT
from tests.process.stages.test_lock_refresh_local_index import PINS_UPLOADED, Handler, pins_index, use_index
from tests.support import serving


@pytest.fixture
def index(tmp_path, monkeypatch):
    """The row's pins on a local index, transformers only at 4.48.3 so far; a fresh uv cache."""
    idx = pins_index(tmp_path / "index", "4.48.3")
    handler = type("BoundHandler", (Handler,), {"index": idx})
    with serving(partial(handler, directory=str(idx.root))) as server:
        use_index(monkeypatch, tmp_path, f"http://127.0.0.1:{server.server_address[1]}/simple")
        yield idx


def _verdict(path):
    m = matrix_mod.load(path)
    report = validate.validate(m, list(m.rows), ROOT / "dockerfiles" / "patches")
    return ([(e.row.id, e.resolution, e.packages) for e in report.rows], sorted(e.render() for e in report.errors),
            report.failures)


def test_an_index_page_cached_before_a_release_is_not_a_conflict(index, write_matrix, tmp_path):
    """Offline, uv reads the cached transformers page, which predates 4.49.0, and answers "no version of
    transformers==4.49.0": a row pinning the new release must still resolve (the network decides)."""
    old = write_matrix(GOOD_MATRIX.replace('transformers: "4.49.0"', 'transformers: "4.48.3"'), "old.yaml")
    resolve.resolve(matrix_mod.load(old).rows[0], cache_first=False)  # warms uv's cache with the page as it is now
    index.add("transformers", "4.49.0", PINS_UPLOADED)

    new = write_matrix(GOOD_MATRIX)
    row = matrix_mod.load(new).rows[0]
    spec = resolve.inputs(row)
    offline = uv.compile_requirements(spec.requirements, row.python, offline=True)
    assert offline.returncode != 0 and "transformers==4.49.0" in offline.stderr  # the stale page's answer
    assert lockfile.parse(resolve.resolve(row))["transformers"].version == "4.49.0"
    rows, errors, failures = _verdict(new)
    assert rows == [(row.id, "ok", 5)] and not failures
    assert not any("cannot be resolved" in e for e in errors), errors


def test_a_cold_cache_gives_the_verdict_of_a_warm_one(index, write_matrix, tmp_path, monkeypatch):
    """On a cold cache uv answers "there is no version of verl[vllm]==0.3.0.post1" offline: every row with verl's
    [vllm] extra failed validate on a fresh machine, and passed the second time."""
    path = write_matrix(GOOD_MATRIX.replace('transformers: "4.49.0"', 'transformers: "4.48.3"'))
    row = matrix_mod.load(path).rows[0]
    offline = uv.compile_requirements(resolve.inputs(row).requirements, row.python, offline=True)
    assert offline.returncode != 0 and "No solution found" in offline.stderr  # cold: what must not be the verdict
    cold = _verdict(path)
    assert cold[0] == [(row.id, "ok", 5)] and not cold[2], cold
    assert _verdict(path) == cold  # warm
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "another-cold-cache"))
    assert _verdict(path) == cold
