"""A dead or unreachable index (issue 13, item 1): `validate` and `lock --row` exit 1 naming the index, never
"pins cannot be resolved" (exit 2), whatever the cache state, the row order or --jobs. The real uv runs against
http://127.0.0.1:<a closed port>/simple with an empty cache: nothing here needs the network."""

from __future__ import annotations

import shutil
import socket
import subprocess

import pytest

from imagematrix.model import matrix as matrix_mod
from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.stages import resolve, validate
from imagematrix.tools import pypi
from tests.conftest import ROOT

ROWS = ("verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311", "verl0.9.1-vllm0.24.0-torch2.11.0-cu130-py312")


@pytest.fixture
def dead_index(tmp_path, monkeypatch):
    """An index URL on a port nothing listens on, for uv and the metadata reader alike, and a cold uv cache."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/simple"
    for name in pypi.INDEX_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("UV_INDEX_URL", url)
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")  # uv retries a refused connection 3 times (8 s) by default
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    monkeypatch.setenv("IMAGEMATRIX_CACHE", str(tmp_path / "cache"))
    return url


@pytest.fixture
def project(tmp_path):
    """The committed matrix and locks, copied (the locks are current: validate reads no era from the index)."""
    root = tmp_path / "project"
    root.mkdir()
    text = subprocess.run(["git", "show", "HEAD:matrix.yaml"], cwd=ROOT, capture_output=True, text=True).stdout
    (root / "matrix.yaml").write_text(text or (ROOT / "matrix.yaml").read_text())
    shutil.copytree(ROOT / "locks", root / "locks")
    return root / "matrix.yaml"


def _uv_only(monkeypatch):
    """Skip the Requires-Python check (it reads the index itself, and would fail first): the verdict is uv's."""
    monkeypatch.setattr(resolve.requires_python, "check", lambda row: [])


def test_uv_against_a_dead_index_is_a_failure_naming_the_index_not_a_conflict(dead_index, project, monkeypatch):
    """Offline, uv answers "there is no version of verl[vllm]==0.3.0.post1" on a cold cache; an earlier resolve
    trusted that answer as a conflict (exit 2). Only the network answer decides, and here that is a fetch error."""
    _uv_only(monkeypatch)
    row = matrix_mod.load(project).select([ROWS[0]])[0]
    offline = resolve.uv.compile_requirements(resolve.inputs(row).requirements, row.python, offline=True)
    assert offline.returncode != 0 and "No solution found" in offline.stderr  # what must never be the verdict
    with pytest.raises(RuntimeFailure) as info:
        resolve.resolve(row)
    assert not isinstance(info.value, InputError)
    assert f"row {row.id}: uv pip compile failed" in str(info.value)
    assert dead_index in str(info.value)  # the index is named
    assert "cannot be resolved" not in str(info.value)


@pytest.mark.parametrize("uv_only", [True, False], ids=["uv", "with-requires-python"])
def test_validate_and_lock_exit_1_naming_the_dead_index(dead_index, project, monkeypatch, run, uv_only):
    if uv_only:
        _uv_only(monkeypatch)
    for command in (("validate", "--row", ROWS[0]), ("lock", "--row", ROWS[0])):
        lock = project.parent / "locks" / f"{ROWS[0]}.txt"
        before = lock.read_bytes()
        result = run(*command, "--matrix", project)
        assert result.code == 1, (command, result)
        assert dead_index in result.err, (command, result)
        assert "cannot be resolved" not in result.err and "internal error" not in result.err, (command, result)
        assert lock.read_bytes() == before  # lock wrote nothing


def _verdicts(report) -> tuple:
    """What the run concluded, row by row. A failure is compared by its cause line: uv fetches pages in parallel, so
    which package's page it names as unreachable (verl/ or vllm/) varies from run to run, the verdict does not."""
    return (sorted((e.row.id, e.resolution, e.lock, e.packages) for e in report.rows),
            sorted(e.render() for e in report.errors), sorted((f.split("\n")[0], "/simple/" in f) for f in report.failures))


def test_the_verdict_does_not_depend_on_row_order_or_jobs(dead_index, project, monkeypatch):
    _uv_only(monkeypatch)
    m = matrix_mod.load(project)
    rows = m.select(list(ROWS))
    patches = ROOT / "dockerfiles" / "patches"
    first = _verdicts(validate.validate(m, rows, patches, jobs=4))
    assert [r[1] for r in first[0]] == ["failed", "failed"] and not first[1] and len(first[2]) == 2
    assert all(named for _, named in first[2])
    assert all(dead_index in failure for failure in validate.validate(m, rows, patches, jobs=4).failures)
    assert _verdicts(validate.validate(m, rows[::-1], patches, jobs=1)) == first
    assert _verdicts(validate.validate(m, rows[::-1], patches, jobs=4)) == first
