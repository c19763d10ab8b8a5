"""Which time a row resolves at: its lock's recorded time while the lock is current (re-locking rewrites nothing),
the present for a changed row or with --refresh. The resolutions themselves are in tests/integration."""

from __future__ import annotations

import shutil

import pytest

from imagematrix.model import matrix as matrix_mod
from imagematrix.model.errors import InputError
from imagematrix.stages import locks
from tests.conftest import ROOT

ROW = "verl0.9.1-vllm0.24.0-torch2.11.0-cu130-py312"


def test_a_current_lock_keeps_its_time_a_refresh_or_a_changed_row_takes_now(tmp_path, monkeypatch):
    shutil.copy(ROOT / "matrix.yaml", tmp_path / "matrix.yaml")
    shutil.copytree(ROOT / "locks", tmp_path / "locks")
    m = matrix_mod.load(tmp_path / "matrix.yaml")
    row = m.select([ROW])[0]
    recorded = locks.recorded_time(locks.lock_path(m, row))
    assert recorded and recorded.endswith("Z")
    monkeypatch.setattr(locks, "now", lambda: "2099-01-01T00:00:00Z")
    assert locks.resolution_time(m, row) == recorded
    assert locks.resolution_time(m, row, refresh=True) == "2099-01-01T00:00:00Z"
    text = (tmp_path / "matrix.yaml").read_text().replace('transformers: "5.9.0"\n', 'transformers: "5.9.1"\n')
    (tmp_path / "matrix.yaml").write_text(text)
    changed = matrix_mod.load(tmp_path / "matrix.yaml")
    stale = next(r for r in changed.rows if r.python == "3.12")
    assert locks.lock_status(changed, stale) == "stale"
    monkeypatch.setattr(locks, "era_time", lambda row: "2026-06-01T00:00:00Z")
    assert locks.resolution_time(changed, stale) == "2026-06-01T00:00:00Z"  # a changed row: its era
    assert locks.resolution_time(changed, stale, refresh=True) == "2099-01-01T00:00:00Z"
    monkeypatch.setattr(locks, "era_time", lambda row: None)  # the index gives no upload times
    assert locks.resolution_time(changed, stale) == "2099-01-01T00:00:00Z"


def test_the_era_is_two_weeks_after_the_newest_upload_among_the_pins_and_never_in_the_future(monkeypatch):
    from imagematrix.tools import pypi_releases
    from imagematrix.tools.pypi_releases import Release

    uploads = {"verl": "2025-04-02T17:33:04Z", "vllm": "2025-02-06T18:26:16Z", "torch": "2024-10-29T17:32:34Z",
               "transformers": "2025-02-17T15:18:58Z", "tensordict": "2024-11-14T15:01:26Z", "pyarrow": None}
    m = matrix_mod.load(ROOT / "matrix.yaml")
    row = m.select(["verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311"])[0]
    pins = row.pins()

    def releases(name, index=None):
        return [Release(version=pins[name], wheel=True, requires_python=None, uploaded=uploads.get(name))]

    monkeypatch.setattr(pypi_releases, "releases", releases)
    assert locks.era_time(row) is None  # pyarrow's upload time unknown: no era (the caller takes now)
    uploads["pyarrow"] = "2025-03-01T00:00:00Z"
    assert locks.era_time(row) == "2025-04-16T17:33:04Z"
    uploads["pyarrow"] = "2099-01-01T00:00:00Z"
    assert locks.era_time(row) <= locks.now()


def test_every_committed_lock_records_its_time():
    for path in sorted((ROOT / "locks").glob("*.txt")):
        assert locks.recorded_time(path), path.name


def _copy(tmp_path):
    shutil.copy(ROOT / "matrix.yaml", tmp_path / "matrix.yaml")
    shutil.copytree(ROOT / "locks", tmp_path / "locks")
    m = matrix_mod.load(tmp_path / "matrix.yaml")
    return m, m.select([ROW])[0]


def test_a_lock_whose_body_was_edited_is_broken_not_ok(tmp_path):
    """Only the header digest used to be compared: a hand-edited body passed validate and rendered wrong files."""
    m, row = _copy(tmp_path)
    path = locks.lock_path(m, row)
    good = path.read_text()
    assert locks.lock_status(m, row) == "ok"
    path.write_text(good.replace("vllm==0.24.0", "vllm==0.23.0"))  # a pin moved
    assert locks.lock_status(m, row) == "broken"
    assert locks.resolution_time(m, row) == locks.recorded_time(path)  # re-locking repairs it to the same bytes
    assert "vllm is locked at 0.23.0, the row pins 0.24.0" in locks.status_message(m, row, "broken")
    path.write_text(good[: good.index("--hash=sha256:")])  # truncated
    assert locks.lock_status(m, row) == "broken"
    path.write_bytes(b"\xff\xfe" + good.encode())  # not UTF-8
    assert locks.lock_status(m, row) == "broken"


def test_a_hashless_entry_breaks_the_lock(tmp_path):
    m, row = _copy(tmp_path)
    path = locks.lock_path(m, row)
    text = path.read_text()
    start = text.index("\nverl==0.9.1 \\\n") + 1
    end = text.index("    # via", start)  # the entry's pin and every --hash line, up to its annotation
    path.write_text(text[:start] + "verl==0.9.1\n" + text[end:])
    assert "entries without hashes: verl" in locks.status_message(m, row, locks.lock_status(m, row))


def test_validate_reports_a_broken_lock_with_exit_2_and_the_fix(tmp_path, run):
    m, row = _copy(tmp_path)
    path = locks.lock_path(m, row)
    path.write_text(path.read_text().replace("torch==2.11.0", "torch==2.10.0"))
    result = run("render", "--matrix", tmp_path / "matrix.yaml", "--row", ROW)
    assert result.code == 2 and "lock is broken" in result.err and f"lock --row {ROW}" in result.err


@pytest.mark.parametrize("text, expected", [("2025-04-16", "2025-04-16T00:00:00Z"),
                                            ("2025-04-16T12:30:00Z", "2025-04-16T12:30:00Z")])
def test_as_of_takes_a_past_date_in_uvs_form(text, expected, tmp_path):
    assert locks.parse_as_of(text) == expected
    shutil.copy(ROOT / "matrix.yaml", tmp_path / "matrix.yaml")
    shutil.copytree(ROOT / "locks", tmp_path / "locks")
    m = matrix_mod.load(tmp_path / "matrix.yaml")
    assert locks.resolution_time(m, m.select([ROW])[0], as_of=expected) == expected  # over the lock's own time


@pytest.mark.parametrize("text", ["yesterday", "2025-13-01", "2025-04-16 12:00", "2999-01-01"])
def test_as_of_refuses_what_is_not_a_past_date(text):
    with pytest.raises(InputError, match="not a past date"):
        locks.parse_as_of(text)


def test_lock_as_of_a_bad_date_is_bad_input_and_writes_nothing(run, project_copy):
    lock = project_copy.parent / "locks" / "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311.txt"
    before = lock.read_text()
    result = run("lock", "--matrix", project_copy, "--row", "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311",
                 "--as-of", "2999-01-01")
    assert result.code == 2 and "not a past date" in result.err
    assert lock.read_text() == before


# --- issue 13, item 6: a lock that is a directory or not UTF-8 is bad input, exit 2, never a traceback --------------

def _no_resolution(monkeypatch):
    """lock must stop before resolving anything (and so before writing anything)."""
    from imagematrix.stages import resolve

    def refuse(*args, **kwargs):
        raise AssertionError("resolved although a lock path is not a file")

    monkeypatch.setattr(resolve, "resolve", refuse)


def _clean(result):
    assert "Traceback" not in result.err and "internal error" not in result.err, result


def test_a_lock_that_is_a_directory_is_bad_input_for_render_and_lock(tmp_path, run, monkeypatch):
    m, row = _copy(tmp_path)
    path = locks.lock_path(m, row)
    path.unlink()
    path.mkdir()
    assert locks.lock_status(m, row) == "broken"  # it was "missing", and `lock --row` then crashed on it
    rel = f"locks/{ROW}.txt"
    result = run("render", "--matrix", tmp_path / "matrix.yaml", "--row", ROW)
    assert result.code == 2, result
    assert f"lock is broken: {rel} (it is a directory, not a file)" in result.err
    assert f"fix: remove {rel} (not a file), then run `python build.py lock --row {ROW}`" in result.err
    _clean(result)
    assert not (tmp_path / "dockerfiles").exists()

    _no_resolution(monkeypatch)
    tools = (tmp_path / "locks" / "tools.txt").read_bytes()
    result = run("lock", "--matrix", tmp_path / "matrix.yaml", "--row", ROW)
    assert result.code == 2, result
    assert f"error: {path}: {rel} is not a file" in result.err and f"remove it, then run `python build.py lock --row {ROW}`" in result.err
    _clean(result)
    assert path.is_dir() and (tmp_path / "locks" / "tools.txt").read_bytes() == tools  # nothing written


def test_a_tools_lock_that_is_a_directory_or_not_utf8_is_bad_input(tmp_path, run, monkeypatch):
    m, row = _copy(tmp_path)
    tools = tmp_path / "locks" / "tools.txt"
    tools.write_bytes(b"\xff\xfe" + tools.read_bytes())
    result = run("render", "--matrix", tmp_path / "matrix.yaml", "--row", ROW)
    assert result.code == 2 and f"error: {tools}: the build tools' lock is not UTF-8 text" in result.err, result
    _clean(result)
    tools.unlink()
    tools.mkdir()
    result = run("render", "--matrix", tmp_path / "matrix.yaml", "--row", ROW)
    assert result.code == 2 and f"error: {tools}: the build tools' lock is unreadable" in result.err, result
    _clean(result)
    _no_resolution(monkeypatch)
    result = run("lock", "--matrix", tmp_path / "matrix.yaml", "--row", ROW)
    assert result.code == 2 and f"error: {tools}: locks/tools.txt is not a file" in result.err, result
    _clean(result)
    assert not (tmp_path / "dockerfiles").exists()


def test_a_lock_that_is_not_utf8_is_bad_input_naming_it(tmp_path, run):
    m, row = _copy(tmp_path)
    path = locks.lock_path(m, row)
    good = path.read_bytes()
    path.write_bytes(good[:100] + b"\xff" + good[100:])
    result = run("render", "--matrix", tmp_path / "matrix.yaml", "--row", ROW)
    assert result.code == 2, result
    assert f"row {ROW}: lock is broken: locks/{ROW}.txt (it is not UTF-8 text (byte 100))" in result.err
    assert f"fix: run `python build.py lock --row {ROW}`" in result.err
    _clean(result)
    assert not (tmp_path / "dockerfiles").exists()


# --- issue 13, item 4: a lock body changed by hand (a hash included) is found offline, by validate and render --check

def _alter_one_hash(text: str) -> str:
    """The lock with one `--hash=sha256:` value changed (its entry still carries a hash)."""
    at = text.index("--hash=sha256:", text.index("\nverl==")) + len("--hash=sha256:")
    return text[:at] + ("0" if text[at] != "0" else "1") + text[at + 1:]


def _truncated_body(text: str) -> str:
    return text[: text.index("--hash=sha256:", text.index("\nverl=="))]


def _wrong_pin(text: str) -> str:
    return text.replace("vllm==0.24.0", "vllm==0.23.0")


def _hashless_entry(text: str) -> str:
    start = text.index("\nverl==0.9.1 \\\n") + 1
    return text[:start] + "verl==0.9.1\n" + text[text.index("    # via", start):]


BROKEN_BODIES = {"hash-altered": _alter_one_hash, "truncated": _truncated_body, "pin at another version": _wrong_pin,
                 "entry without hashes": _hashless_entry}


def test_a_lock_with_one_hash_changed_by_hand_is_broken(tmp_path):
    """Only the pins and the presence of hashes were checked: a changed hash value passed validate and render."""
    m, row = _copy(tmp_path)
    path = locks.lock_path(m, row)
    path.write_text(_alter_one_hash(path.read_text()))
    assert locks.lock_status(m, row) == "broken"
    assert "the body digest does not match" in locks.status_message(m, row, "broken")
    assert locks.resolution_time(m, row) == locks.recorded_time(path)  # re-locking writes the lock as it was


def test_every_committed_lock_records_its_body_digest():
    from imagematrix.model import lockfile

    for path in sorted((ROOT / "locks").glob("*.txt")):
        if path.name != "tools.txt":
            assert lockfile.body_digest_problem(path.read_text()) is None, path.name


def test_the_body_digest_line_leaves_the_locks_published_sha256_as_it_was(tmp_path):
    """Image labels, provenance and GPU records carry the lock's sha256; the body-digest line (a function of the
    rest) is left out of it, so images published before locks carried the line still verify."""
    import hashlib

    from imagematrix.model import lockfile

    m, row = _copy(tmp_path)
    text = locks.lock_path(m, row).read_text()
    without = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("# body-digest:"))
    assert without != text and lockfile.file_sha256(text) == hashlib.sha256(without.encode()).hexdigest()


def _validate_offline(monkeypatch):
    """validate with uv's answer taken from the committed lock (what a resolution at its recorded time gives)."""
    from imagematrix.stages import resolve

    committed = (ROOT / "locks" / f"{ROW}.txt").read_text()
    monkeypatch.setattr(resolve, "resolve", lambda row, **kw: committed)


@pytest.mark.parametrize("breakage", list(BROKEN_BODIES))
def test_validate_reports_each_broken_lock_body_with_exit_2_and_the_fix(tmp_path, run, monkeypatch, breakage):
    m, row = _copy(tmp_path)
    path = locks.lock_path(m, row)
    _validate_offline(monkeypatch)
    assert run("validate", "--matrix", tmp_path / "matrix.yaml", "--row", ROW).code == 0
    path.write_text(BROKEN_BODIES[breakage](path.read_text()))
    result = run("validate", "--matrix", tmp_path / "matrix.yaml", "--row", ROW)
    assert result.code == 2, result
    assert f"row {ROW}: lock is broken: locks/{ROW}.txt (" in result.err, result
    assert f"fix: run `python build.py lock --row {ROW}`" in result.err
    _clean(result)


@pytest.mark.parametrize("breakage", [*BROKEN_BODIES, "cut inside the header"])
def test_render_check_reports_a_broken_lock_with_exit_2_and_the_fix(tmp_path, run, breakage):
    """Not "up to date" (the hash-altered lock was), not a drift to re-render (exit 1), not a traceback."""
    m, row = _copy(tmp_path)
    path = locks.lock_path(m, row)
    text = path.read_text()
    path.write_text(BROKEN_BODIES[breakage](text) if breakage in BROKEN_BODIES else text[:150])
    result = run("render", "--check", "--matrix", tmp_path / "matrix.yaml", "--row", ROW)
    assert result.code == 2, result
    assert f"locks/{ROW}.txt" in result.err and f"fix: run `python build.py lock --row {ROW}`" in result.err, result
    assert "up to date" not in result.out
    _clean(result)
    assert not (tmp_path / "dockerfiles").exists()
