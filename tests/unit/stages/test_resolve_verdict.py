"""Resolution: which answer of uv is the verdict (stages/resolve.py); the real resolutions are in tests/integration/test_resolve.py."""

from __future__ import annotations

import pytest

from imagematrix.model import lockfile, matrix
from imagematrix.model.errors import InputError
from imagematrix.stages import resolve


def test_an_offline_no_solution_is_never_the_verdict(monkeypatch):
    """Offline, uv says "there is no version of verl[vllm]==X" on a cold cache (issue 13): the network decides."""
    from imagematrix.model.errors import RuntimeFailure

    calls = []

    def fake_compile(row, *, hashes, offline=False, exclude_newer=None, matrix_path=None, platform="linux/amd64"):
        calls.append(offline)
        if offline:
            raise RuntimeFailure("No solution found when resolving dependencies:\n  Because there is no version of "
                                 "verl[vllm]==0.3.0.post1 and you require verl[vllm]==0.3.0.post1, we can conclude ...")
        return "verl==0.3.0.post1\n"

    monkeypatch.setattr(resolve, "compile_", fake_compile)
    monkeypatch.setattr(resolve.requires_python, "check", lambda row: [])
    row = matrix.load().rows[0]
    assert resolve.resolve(row) == "verl==0.3.0.post1\n"
    assert calls == [True, False]


# --- issue 13, item 15: CUDA and resolver-conflict errors name the matrix file and the row's line -------------------

TWO_ROWS = ('defaults:\n  python: "3.11"\n  base: debootstrap:bookworm\nrows:\n'
            '  - verl: "0.4.1"\n    vllm: "0.8.5"\n    torch: "2.6.0"\n    cuda: "12.4"\n'
            '    tensordict: "0.6.2"\n    transformers: "4.51.3"\n'
            '  - verl: "0.3.0.post1"\n    vllm: "0.7.2"\n    torch: "2.5.1"\n    cuda: "12.6"\n'
            '    tensordict: "0.6.2"\n    transformers: "4.49.0"\n')


def test_a_resolver_conflict_names_the_matrix_file_and_the_rows_line(monkeypatch, write_matrix):
    import subprocess

    path = write_matrix(TWO_ROWS)
    row = matrix.load(path).rows[1]  # the second row starts at line 11
    unsat = ("  × No solution found when resolving dependencies:\n  ╰─▶ Because vllm==0.7.2 depends on torch==2.5.1 and "
             "you require torch==2.6.0, we can conclude that your requirements are unsatisfiable.")
    monkeypatch.setattr(resolve.uv, "compile_requirements",
                        lambda *a, **kw: subprocess.CompletedProcess([], 1, "", unsat))
    with pytest.raises(InputError) as info:
        resolve.compile_(row, hashes=False, matrix_path=path)
    assert info.value.where == f"{path}:11, row {row.id}"
    assert "pins cannot be resolved together" in info.value.message and "unsatisfiable" in info.value.message
    assert info.value.render().startswith(f"{path}:11, row {row.id}: pins cannot be resolved together")


def test_a_cuda_mismatch_names_the_matrix_file_and_the_cuda_line(write_matrix):
    path = write_matrix(TWO_ROWS)
    row = matrix.load(path).rows[1]  # cuda "12.6" at line 14; torch 2.5.1 from PyPI is built for 12.4
    entries = lockfile.parse("torch==2.5.1\n    # via -r requirements.in\nnvidia-cuda-runtime-cu12==12.4.127\n"
                             "    # via torch\n")
    problem = resolve.check_cuda(row, entries, path)
    assert problem is not None
    assert problem.where == f"{path}:14, row {row.id}, field cuda"
    assert problem.message == "cuda is 12.6 but torch 2.5.1 from PyPI is built for CUDA 12.4"
    assert resolve.check_cuda(matrix.load(path).rows[0], lockfile.parse("torch==2.6.0\nnvidia-cuda-runtime-cu12=="
                                                                        "12.4.127\n"), path) is None


def test_a_cuda_default_is_blamed_on_the_defaults_line(write_matrix):
    """A row that inherits its cuda from `defaults:` points at the default's line."""
    text = TWO_ROWS.replace('  base: debootstrap:bookworm\n', '  base: debootstrap:bookworm\n  cuda: "12.6"\n', 1)
    text = text.replace('    cuda: "12.6"\n', '', 1)
    path = write_matrix(text)
    row = matrix.load(path).rows[1]
    entries = lockfile.parse("torch==2.5.1\nnvidia-cuda-runtime-cu12==12.4.127\n")
    assert resolve.check_cuda(row, entries, path).where == f"{path}:4, row {row.id}, field cuda"
