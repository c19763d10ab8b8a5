"""Resolution and locks with the real uv against PyPI (marked `network`)."""

from __future__ import annotations

import re
import shutil

import pytest

from imagematrix.model import lockfile, matrix
from imagematrix.stages import locks, resolve
from tests.conftest import GOOD_MATRIX
from tests.support import index_drift

pytestmark = pytest.mark.network

ROW_05 = """\
  - verl: "0.5.0"
    vllm: "0.10.0"
    torch: "2.7.1"
    cuda: "12.6"
    tensordict: "0.8.3"
    transformers: "4.55.4"
"""
OVERRIDE_05 = """\
    overrides:
      vllm:
        version: "0.10.0"
        reason: verl publishes 0.5.0 with vLLM 0.10.0 although its extra says <=0.8.5
"""


def test_real_matrix_validates(run):
    result = run("validate")
    assert result.code == 0, result
    assert "validated" in result.out


def test_unsatisfiable_row_exits_2_with_row_and_resolver_explanation(run, write_matrix):
    text = GOOD_MATRIX.replace('vllm: "0.7.2"', 'vllm: "0.10.0"').replace('torch: "2.5.1"', 'torch: "2.6.0"')
    path = write_matrix(text)
    result = run("validate", "--matrix", path)
    assert result.code == 2, result
    # the matrix file and the row's line (issue 13, item 15)
    assert f"{path}:5, row verl0.3.0.post1-vllm0.10.0-torch2.6.0-cu124-py311: pins cannot be resolved" in result.err
    assert "cannot be resolved" in result.err
    assert re.search(r"you require vllm==0\.10\.0.*unsatisfiable", result.err, re.S), result.err


def test_python_a_pin_does_not_support_exits_2(run, write_matrix):
    text = ('defaults:\n  python: "3.13"\n  base: debootstrap:trixie\nrows:\n'
            '  - {verl: "0.9.1", vllm: "0.24.0", torch: "2.11.0", cuda: "13.0", tensordict: "0.10.0", transformers: "5.9.0"}\n')
    result = run("validate", "--matrix", write_matrix(text))
    assert result.code == 2, result
    assert "verl 0.9.1 requires Python <3.13,>=3.10, the row has 3.13" in result.err, result.err
    assert "field python" in result.err


def test_cuda_must_match_the_torch_wheel(run, write_matrix):
    path = write_matrix(GOOD_MATRIX.replace('cuda: "12.4"', 'cuda: "12.6"'))
    result = run("validate", "--matrix", path)
    assert result.code == 2, result
    assert f"{path}:8, row verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu126-py311, field cuda: cuda is 12.6" in result.err
    assert "built for CUDA 12.4" in result.err and 'set `cuda: "12.4"`' in result.err


def test_verl_extra_checks_declared_vllm_range_unless_overridden(run, write_matrix):
    head = 'defaults:\n  python: "3.11"\n  base: debootstrap:bookworm\nrows:\n'
    result = run("validate", "--matrix", write_matrix(head + ROW_05))
    assert result.code == 2, result
    # "verl==0.5.0 depends on", or "verl>=0.5.0 depends on" when the row's era knows no later verl
    assert re.search(r"verl(==|>=)0\.5\.0 depends on vllm>=0\.7\.3,<=0\.8\.5", result.err), result.err

    row = matrix.load(write_matrix(head + ROW_05 + OVERRIDE_05)).rows[0]
    spec = resolve.inputs(row)
    assert spec.requirements.splitlines()[0] == "verl==0.5.0"
    assert spec.overrides == "vllm==0.10.0\n"
    entries = lockfile.parse(resolve.resolve(row))
    assert entries["vllm"].version == "0.10.0" and entries["verl"].version == "0.5.0"


def test_lock_then_stale_lock_is_reported(run, project_copy):
    assert run("validate", "--matrix", project_copy).code == 0
    text = project_copy.read_text()
    project_copy.write_text(text.replace('transformers: "4.49.0"', 'transformers: "4.48.3"', 1))
    result = run("validate", "--matrix", project_copy)
    assert result.code == 2, result
    assert "lock is missing" in result.err or "lock is stale" in result.err
    # a changed pin changes the derived id only for id-bearing pins; transformers keeps the id: stale
    assert "lock is stale" in result.err and "python build.py lock --row verl0.3.0.post1" in result.err

    row_id = "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311"
    result = run("lock", "--matrix", project_copy, "--row", row_id)
    assert result.code == 0, result
    lock = (project_copy.parent / "locks" / f"{row_id}.txt").read_text()
    assert "\ntransformers==4.48.3 \\\n    --hash=sha256:" in lock
    assert run("validate", "--matrix", project_copy).code == 0


def test_lock_writes_nothing_when_a_row_fails(run, write_matrix, tmp_path):
    bad = GOOD_MATRIX.replace("rows:\n", "rows:\n  - {verl: \"0.3.0.post1\", vllm: \"0.10.0\", torch: \"2.6.0\", "
                              "cuda: \"12.4\", tensordict: \"0.6.2\", transformers: \"4.49.0\"}\n")
    result = run("lock", "--matrix", write_matrix(bad))
    assert result.code == 2, result
    assert not (tmp_path / "locks").exists()


def test_real_locks_are_hash_pinned_and_match_their_rows():
    m = matrix.load()
    for row in m.rows:
        assert locks.lock_status(m, row) == "ok", row.id
        entries = lockfile.parse(locks.lock_path(m, row).read_text())
        for name, version in row.pins().items():
            if name != "flash-attn":  # installed from its prebuilt wheel, not from PyPI
                assert entries[name].version == version, (row.id, name)
        assert all("--hash=sha256:" in e.text for e in entries.values()), row.id


def test_relocking_an_unchanged_row_rewrites_nothing(run, project_copy):
    """No temp paths in uv's annotations, and the lock's own exclude-newer cutoff is reused: a lock is a function of
    the row and of the index, not of the run. The first relock may differ from the committed lock: the index behind
    this machine has added releases dated before a committed lock's cutoff (seen 2026-12-02: httpx 0.29.0, uploaded
    2026-11-26, absent when the verl 0.3 row was locked with cutoff 2026-12-02T06:42Z), which real PyPI cannot do.
    The second relock must then write nothing, or only what the index added under the cutoff in between
    (tests.support.index_drift)."""
    row = "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311"
    lock = project_copy.parent / "locks" / f"{row}.txt"
    cutoff = locks.recorded_time(lock)
    first = run("lock", "--matrix", project_copy, "--row", row)
    assert first.code == 0, first
    before = lock.read_text()
    assert "/tmp/" not in before
    assert cutoff and f"# exclude-newer: {cutoff}" in before  # the unchanged row kept its cutoff
    result = run("lock", "--matrix", project_copy, "--row", row)
    assert result.code == 0, result
    # unchanged, unless the index listed another release dated before the cutoff in between (it did on 2026-12-07:
    # regex 2026.11.25 between two re-locks a minute apart): then only such upgrades, the header the same
    assert ("unchanged" in result.out) == (lock.read_text() == before), result
    assert index_drift(before, lock.read_text()) == [], result


def test_the_verdict_does_not_depend_on_row_order_or_jobs(tmp_path):
    """Issue 13, item 1: one row that resolves and is locked, one that conflicts; the same per-row verdicts and the
    same errors (the conflict at its row's line in the matrix) forwards with --jobs 4, reversed with 1 and 4."""
    import subprocess

    from imagematrix.stages import validate
    from tests.conftest import ROOT

    committed = subprocess.run(["git", "show", "HEAD:matrix.yaml"], cwd=ROOT, capture_output=True, text=True).stdout
    first_row = committed.index("\n  - verl:", committed.index("\nrows:\n"))
    first_row_end = committed.index("\n  - verl:", first_row + 1) + 1
    conflict = ('  - {verl: "0.3.0.post1", vllm: "0.10.0", torch: "2.6.0", cuda: "12.4", tensordict: "0.6.2", '
                'transformers: "4.49.0", rollout_only: a row that only checks the resolver verdict here}\n')
    text = committed[:first_row_end] + conflict
    (tmp_path / "matrix.yaml").write_text(text)
    shutil.copytree(ROOT / "locks", tmp_path / "locks")
    m = matrix.load(tmp_path / "matrix.yaml")
    rows = list(m.rows)
    assert [r.id for r in rows] == ["verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311",
                                    "verl0.3.0.post1-vllm0.10.0-torch2.6.0-cu124-py311"]

    def verdicts(report):
        return (sorted((e.row.id, e.resolution, e.lock, e.packages, e.torch_cuda) for e in report.rows),
                sorted(e.render() for e in report.errors), sorted(report.failures))

    patches = ROOT / "dockerfiles" / "patches"
    first = verdicts(validate.validate(m, rows, patches, jobs=4))
    assert [v[1:3] for v in first[0]] == [("unsatisfiable", ""), ("ok", "ok")], first
    line = text.count("\n")  # the conflicting row is the file's last line
    assert any(e.startswith(f"{m.path}:{line}, row {rows[1].id}: pins cannot be resolved together") for e in first[1])
    assert not first[2]
    assert verdicts(validate.validate(m, rows[::-1], patches, jobs=1)) == first
    assert verdicts(validate.validate(m, rows[::-1], patches, jobs=4)) == first


def test_a_cold_cache_gives_the_verdict_of_a_warm_one(run, tmp_path, monkeypatch):
    """Issue 13, item 1e, as a new user met it: with empty caches `validate --row` of a verl[vllm] row exited 2
    ("there is no version of verl[vllm]==0.3.0.post1", uv's offline answer on a cache miss) and passed the second
    time. Cold and warm give the same verdict and the same table."""
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    monkeypatch.setenv("IMAGEMATRIX_CACHE", str(tmp_path / "cache"))
    row = "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311"

    def table(result):
        return [line for line in result.out.splitlines() if not line.startswith("validated ")]

    cold = run("validate", "--row", row)
    assert cold.code == 0, cold
    assert "cannot be resolved" not in cold.err
    warm = run("validate", "--row", row)
    assert warm.code == 0, warm
    assert table(warm) == table(cold)
