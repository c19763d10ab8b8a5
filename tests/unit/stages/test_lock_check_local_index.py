"""`lock --check` (issue 26, item 11), on the local PEP 503/691 index of test_lock_refresh_local_index with the real
uv; nothing needs the network.

Item 11: the committed locks were resolved from stale index pages, so they did not match their own cutoff, and nothing
checked it: `lock --check` re-resolves each lock at the time it records, with uv's cache revalidated (uv answers a
page it holds as fresh from its cache: this index's pages say max-age=600, as PyPI's do), exits 1 naming each pin
that moved and writes nothing."""

from __future__ import annotations

from functools import partial

import pytest

from imagematrix.model import lockfile
from imagematrix.stages import locks
from tests.conftest import GOOD_MATRIX
from tests.support import serving
from tests.unit.stages.test_lock_refresh_local_index import ERA, PINS_UPLOADED, ROW, Handler, Index, use_index


class CachingHandler(Handler):
    """The local index, whose project pages say what PyPI's say: fresh for 10 minutes (Cache-Control: max-age=600),
    so a uv cache that is not revalidated answers from what it read before."""

    def end_headers(self):
        if self.path.startswith("/simple/") and self.path.endswith("/"):
            self.send_header("Cache-Control", "max-age=600, public")
        super().end_headers()


@pytest.fixture
def index(tmp_path, monkeypatch):
    idx = Index(tmp_path / "index")
    idx.root.mkdir()
    for name, version in (("torch", "2.5.1"), ("tensordict", "0.6.2"), ("transformers", "4.49.0")):
        idx.add(name, version, PINS_UPLOADED)
    idx.add("vllm", "0.7.2", PINS_UPLOADED, requires=("leftpad",))
    idx.add("verl", "0.3.0.post1", PINS_UPLOADED, requires=("vllm==0.7.2; extra == 'vllm'",), extras=("vllm",))
    idx.add("leftpad", "1.0", "2025-01-02T00:00:00.000000Z")
    handler = type("BoundHandler", (CachingHandler,), {"index": idx})
    with serving(partial(handler, directory=str(idx.root))) as server:
        use_index(monkeypatch, tmp_path, f"http://127.0.0.1:{server.server_address[1]}/simple")
        # the build tools' lock resolves uv itself, which this index does not hold
        monkeypatch.setattr(locks, "lock_tools", lambda matrix, refresh=False: "# build tools (not under test)\n")
        yield idx


def _files(root) -> dict[str, bytes]:
    """The project's files: the matrix, locks/ and dockerfiles/ (uv's and the project's caches live beside them)."""
    found = [root / "matrix.yaml", *(p for d in ("locks", "dockerfiles") for p in sorted((root / d).rglob("*")))]
    return {str(p.relative_to(root)): p.read_bytes() for p in found if p.is_file()}


# --- item 11: lock --check ------------------------------------------------------------------------------------------

def test_lock_check_names_a_pin_released_before_the_cutoff_that_the_lock_missed(index, write_matrix, run):
    path = write_matrix(GOOD_MATRIX)
    assert run("lock", "--matrix", path, "--row", ROW).code == 0
    lock = path.parent / "locks" / f"{ROW}.txt"
    first = lock.read_text()
    assert f"# exclude-newer: {ERA}\n" in first and lockfile.parse(first)["leftpad"].version == "1.0"

    # uploaded before the lock's cutoff, but not on the page uv read (and still holds in its cache) when it locked
    index.add("leftpad", "1.1", "2025-01-10T00:00:00.000000Z")
    before = _files(path.parent)
    result = run("lock", "--check", "--matrix", path, "--row", ROW)
    assert result.code == 1, result
    assert f"differs locks/{ROW}.txt (cutoff {ERA}" in result.out and "  leftpad: 1.0 -> 1.1\n" in result.out, result
    assert [line for line in result.out.splitlines() if "->" in line and "resolved" not in line] == ["  leftpad: 1.0 -> 1.1"]
    assert f"fix: run `python build.py lock --row {ROW}`" in result.err, result
    assert _files(path.parent) == before  # never writes

    # re-locking the unchanged row resolves at the same cutoff, uv's cache revalidated: it takes the release
    result = run("lock", "--matrix", path, "--row", ROW)
    assert result.code == 0 and "  leftpad: 1.0 -> 1.1\n" in result.out, result
    assert locks.recorded_time(lock) == ERA and lockfile.parse(lock.read_text())["leftpad"].version == "1.1"
    assert run("lock", "--check", "--matrix", path, "--row", ROW).code == 0


def test_lock_check_of_an_unchanged_lock_exits_0_and_writes_nothing(index, write_matrix, run):
    path = write_matrix(GOOD_MATRIX)
    assert run("lock", "--matrix", path, "--row", ROW).code == 0
    index.add("leftpad", "1.2", "2025-03-01T00:00:00.000000Z")  # after the cutoff: no part of the lock's index
    before = _files(path.parent)
    result = run("lock", "--check", "--matrix", path, "--row", ROW)
    assert result.code == 0, result
    assert f"matches locks/{ROW}.txt (cutoff {ERA}, 6 packages" in result.out and "0 differ" in result.out, result
    assert _files(path.parent) == before


def test_lock_check_of_a_missing_lock_or_with_refresh_is_bad_input(index, write_matrix, run):
    path = write_matrix(GOOD_MATRIX)
    result = run("lock", "--check", "--matrix", path, "--row", ROW)
    assert result.code == 2 and f"lock is missing: locks/{ROW}.txt" in result.err, result
    assert not (path.parent / "locks").exists()
    result = run("lock", "--check", "--refresh", "--matrix", path)
    assert result.code == 2 and "--check re-resolves each lock at its own cutoff" in result.err, result
