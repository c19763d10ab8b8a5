"""`lock --check` and the flash-attn sdist a lock records (issue 26, items 11 and 12), on the local PEP 503/691 index
of test_lock_refresh_local_index with the real uv; nothing needs the network.

Item 11: the committed locks were resolved from stale index pages, so they did not match their own cutoff, and nothing
checked it: `lock --check` re-resolves each lock at the time it records, with uv's cache revalidated (uv answers a
page it holds as fresh from its cache: this index's pages say max-age=600, as PyPI's do), exits 1 naming each pin
that moved and writes nothing.
Item 12: a row whose flash-attn version knowledge/flash-attn.yaml does not list passed validate and failed render
(and render then wrote no row at all): `lock` records the sdist's file name and sha256 from the index's simple page,
render compiles from it, validate refuses what render would, and one bad row no longer stops the others."""

from __future__ import annotations

import hashlib
from functools import partial

import pytest

from imagematrix.model import lockfile
from imagematrix.model import matrix as matrix_mod
from imagematrix.stages import locks
from tests.conftest import GOOD_MATRIX, GOOD_ROW
from tests.process.stages.test_lock_refresh_local_index import ERA, PINS_UPLOADED, ROW, Handler, Index, use_index
from tests.support import serving

FA = "2.7.3"  # a flash-attn release knowledge/flash-attn.yaml does not list
FA_ROW = f"{ROW}-fa{FA}"
SDIST = f"flash_attn-{FA}.tar.gz"
SDIST_BYTES = b"the flash-attn 2.7.3 sdist"
SDIST_SHA = hashlib.sha256(SDIST_BYTES).hexdigest()
# two rows that validate clean: the first without flash-attn (so rollout only: verl 0.3 trains with it), the second
# the same pins with the unlisted flash-attn
TWO_ROWS = (GOOD_MATRIX + '    rollout_only: "no flash-attn in this test row"\n'
            + GOOD_ROW.replace("flash_attn: null", f'flash_attn: "{FA}"'))


def _add_file(index: Index, name: str, filename: str, data: bytes) -> None:
    """A file that is no wheel (an sdist) on the project's page."""
    (index.root / name).mkdir(parents=True, exist_ok=True)
    (index.root / name / filename).write_bytes(data)
    index.files.setdefault(name, []).append({"filename": filename, "url": filename, "upload-time": PINS_UPLOADED,
                                             "hashes": {"sha256": hashlib.sha256(data).hexdigest()}})


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
    for name, version in (("torch", "2.5.1"), ("tensordict", "0.6.2"), ("transformers", "4.49.0"), ("einops", "0.8.0")):
        idx.add(name, version, PINS_UPLOADED)
    idx.add("vllm", "0.7.2", PINS_UPLOADED, requires=("leftpad",))
    idx.add("verl", "0.3.0.post1", PINS_UPLOADED, requires=("vllm==0.7.2; extra == 'vllm'",), extras=("vllm",))
    idx.add("leftpad", "1.0", "2025-01-02T00:00:00.000000Z")
    _add_file(idx, "flash-attn", SDIST, SDIST_BYTES)
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

    # uploaded before the lock's cutoff, but not on the page uv read (and still holds in its cache) when it locked; or
    # a release the index lists with an upload time before the cutoff after the lock was written (PyPI's view here
    # did that on 2026-12-07: loguru 0.8.0 dated 2026-11-11 appeared after locks cut off at 2026-12-02 were written,
    # and CI on an unchanged commit turned red)
    index.add("leftpad", "1.1", "2025-01-10T00:00:00.000000Z")
    before = _files(path.parent)
    result = run("lock", "--check", "--matrix", path, "--row", ROW)
    # the lock still installs exactly as written (its pins and hashes resolve at the cutoff): advice, exit 0
    assert result.code == 0, result
    assert f"installs as locked locks/{ROW}.txt (cutoff {ERA}" in result.out and "  leftpad: 1.0 -> 1.1\n" in result.out
    assert [line for line in result.out.splitlines() if "->" in line and "resolved" not in line] == ["  leftpad: 1.0 -> 1.1"]
    assert "0 differ, 1 with newer releases under their cutoff" in result.out, result
    assert f"to take them: run `python build.py lock --row {ROW}`" in result.err, result
    assert _files(path.parent) == before  # never writes

    # a scheduled re-lock job asks for the newest resolution: --strict fails on it
    result = run("lock", "--check", "--strict", "--matrix", path, "--row", ROW)
    assert result.code == 1 and "This fails --strict." in result.err and "  leftpad: 1.0 -> 1.1\n" in result.out, result
    assert _files(path.parent) == before

    # re-locking the unchanged row resolves at the same cutoff, uv's cache revalidated: it takes the release
    result = run("lock", "--matrix", path, "--row", ROW)
    assert result.code == 0 and "  leftpad: 1.0 -> 1.1\n" in result.out, result
    assert locks.recorded_time(lock) == ERA and lockfile.parse(lock.read_text())["leftpad"].version == "1.1"
    assert run("lock", "--check", "--strict", "--matrix", path, "--row", ROW).code == 0


def test_lock_check_fails_a_lock_whose_pinned_file_the_index_serves_with_another_hash(index, write_matrix, run):
    path = write_matrix(GOOD_MATRIX)
    assert run("lock", "--matrix", path, "--row", ROW).code == 0
    old_hash = index.files["leftpad"][0]["hashes"]["sha256"]
    index.files["leftpad"].clear()
    index.add("leftpad", "1.0", "2025-01-02T00:00:00.000000Z", requires=("einops",))  # the same version, other bytes
    assert index.files["leftpad"][0]["hashes"]["sha256"] != old_hash
    before = _files(path.parent)
    result = run("lock", "--check", "--matrix", path, "--row", ROW)
    assert result.code == 1, result
    assert f"differs locks/{ROW}.txt (cutoff {ERA}" in result.out and "  leftpad: 1.0 (files changed)\n" in result.out
    assert "no longer install as written" in result.err and f"fix: run `python build.py lock --row {ROW}`" in result.err
    assert _files(path.parent) == before


def test_lock_check_fails_a_lock_whose_pinned_release_is_gone_at_the_cutoff(index, write_matrix, run):
    path = write_matrix(GOOD_MATRIX)
    assert run("lock", "--matrix", path, "--row", ROW).code == 0
    index.add("leftpad", "1.1", "2025-01-10T00:00:00.000000Z")
    index.files["leftpad"] = [f for f in index.files["leftpad"] if "-1.0-" not in f["filename"]]  # 1.0 withdrawn
    result = run("lock", "--check", "--matrix", path, "--row", ROW)
    assert result.code == 1, result
    assert "  the locked pins no longer resolve at the cutoff:\n" in result.out and "leftpad" in result.out, result
    assert "no longer install as written" in result.err, result


def test_lock_check_of_an_unchanged_lock_exits_0_and_writes_nothing(index, write_matrix, run):
    path = write_matrix(GOOD_MATRIX)
    assert run("lock", "--matrix", path, "--row", ROW).code == 0
    index.add("leftpad", "1.2", "2025-03-01T00:00:00.000000Z")  # after the cutoff: no part of the lock's index
    before = _files(path.parent)
    result = run("lock", "--check", "--matrix", path, "--row", ROW)
    assert result.code == 0, result
    assert f"matches locks/{ROW}.txt (cutoff {ERA}, 6 packages" in result.out and "0 differ, 0 with" in result.out, result
    assert _files(path.parent) == before


def test_lock_check_of_a_missing_lock_or_with_refresh_is_bad_input(index, write_matrix, run):
    path = write_matrix(GOOD_MATRIX)
    result = run("lock", "--check", "--matrix", path, "--row", ROW)
    assert result.code == 2 and f"lock is missing: locks/{ROW}.txt" in result.err, result
    assert not (path.parent / "locks").exists()
    result = run("lock", "--check", "--refresh", "--matrix", path)
    assert result.code == 2 and "--check re-resolves each lock at its own cutoff" in result.err, result


# --- item 12: the flash-attn sdist in the lock -----------------------------------------------------------------------

def test_a_row_with_an_unlisted_flash_attn_locks_its_sdist_and_renders(index, write_matrix, run, monkeypatch):
    from imagematrix.knowledge import flash_attn

    assert flash_attn.sdist(FA) is None
    # CUDA 12.4 has no compiler wheels in the data file, and without them the compile stage names no sdist
    monkeypatch.setattr(flash_attn, "toolchain", lambda cuda: flash_attn.data().toolchains["13.0"])
    path = write_matrix(TWO_ROWS)
    result = run("lock", "--matrix", path)
    assert result.code == 0, result
    text = (path.parent / "locks" / f"{FA_ROW}.txt").read_text()
    assert f"\n# flash-attn-sdist: {SDIST} sha256:{SDIST_SHA}\n" in lockfile.split(text)[0]
    assert "flash-attn-sdist" not in (path.parent / "locks" / f"{ROW}.txt").read_text()
    m = matrix_mod.load(path)
    assert [locks.lock_status(m, row) for row in m.rows] == ["ok", "ok"]

    result = run("render", "--matrix", path)
    assert result.code == 0, result
    dockerfile = (path.parent / "dockerfiles" / "generated" / FA_ROW / "Dockerfile").read_text()
    assert f"--fetch {SDIST} --sha256 {SDIST_SHA} " in dockerfile
    assert run("lock", "--check", "--matrix", path, "--row", FA_ROW).code == 0

    index.files["flash-attn"][0]["hashes"]["sha256"] = "0" * 64  # the index now says another hash for the file
    result = run("lock", "--check", "--matrix", path, "--row", FA_ROW)
    assert result.code == 1, result
    assert f"  flash-attn sdist: {SDIST} sha256:{SDIST_SHA[:12]}... -> {SDIST} sha256:000000000000...\n" in result.out


def test_lock_refuses_an_index_sdist_that_differs_from_the_data_file(index, write_matrix, run):
    """knowledge/flash-attn.yaml lists 2.7.4.post1 with PyPI's hash; an index with other bytes is not taken."""
    _add_file(index, "flash-attn", "flash_attn-2.7.4.post1.tar.gz", b"not the sdist PyPI has")
    row = f"{ROW}-fa2.7.4.post1"
    path = write_matrix(GOOD_MATRIX.replace("flash_attn: null", 'flash_attn: "2.7.4.post1"'))
    result = run("lock", "--matrix", path, "--row", row)
    assert result.code == 2, result
    assert f"row {row}: flash-attn 2.7.4.post1: the index has flash_attn-2.7.4.post1.tar.gz sha256:" in result.err
    assert "knowledge/flash-attn.yaml lists flash_attn-2.7.4.post1.tar.gz sha256:f03485c9" in result.err, result
    assert not (path.parent / "locks").exists()


def test_a_lock_without_the_sdist_is_refused_by_validate_and_render_and_the_other_row_is_written(index, write_matrix,
                                                                                               run):
    path = write_matrix(TWO_ROWS)
    assert run("lock", "--matrix", path).code == 0
    lock = path.parent / "locks" / f"{FA_ROW}.txt"
    lock.write_text("".join(line for line in lock.read_text().splitlines(keepends=True)
                            if not line.startswith("# flash-attn-sdist:")))  # as written before locks recorded it

    result = run("validate", "--matrix", path)
    assert result.code == 2, result
    assert f"row {FA_ROW}: lock is broken: locks/{FA_ROW}.txt (it records no flash-attn sdist" in result.err, result
    assert f"fix: run `python build.py lock --row {FA_ROW}`" in result.err, result
    assert [line for line in result.err.splitlines() if line.startswith("error:")] == [
        f"error: row {FA_ROW}: lock is broken: locks/{FA_ROW}.txt (it records no flash-attn sdist, and "
        f"knowledge/flash-attn.yaml lists none for {FA} (`lock` records its file name and sha256 from the index))"], result

    result = run("render", "--matrix", path)
    assert result.code == 2, result
    assert f"row {FA_ROW}: lock is broken" in result.err and f"lock --row {FA_ROW}" in result.err, result
    assert "Traceback" not in result.err and "internal error" not in result.err, result
    generated = path.parent / "dockerfiles" / "generated"
    assert (generated / ROW / "Dockerfile").is_file() and not (generated / FA_ROW).exists()
    assert f"wrote dockerfiles/generated/{ROW}/" in result.out and f"not written dockerfiles/generated/{FA_ROW}/" in result.out

    assert run("lock", "--matrix", path, "--row", FA_ROW).code == 0  # the fix the messages give
    assert run("validate", "--matrix", path).code == 0
    assert run("render", "--matrix", path).code == 0 and (generated / FA_ROW / "Dockerfile").is_file()
