"""Extras next to verl (issue 16, item 5): the unsloth row (verl 0.5.0 + vLLM 0.10.0 + transformers 4.55.4, as in field
reports) validates, and its smoke plan checks each extra (knowledge/extras.yaml, imagematrix/knowledge/extras.py):
unsloth and unsloth_zoo refuse to import without a GPU, so the CPU smoke test finds them and the GPU suite imports
them."""

from __future__ import annotations

import pytest

from imagematrix import rules
from imagematrix.knowledge import extras
from imagematrix.model import lockfile
from imagematrix.model import matrix as matrix_mod
from imagematrix.model.errors import InputError
from imagematrix.stages import locks, render
from tests.conftest import ROOT
from tests.unit.suites.test_gpusmoke import _row_json, gs

UNSLOTH_ROW = "verl0.5.0-vllm0.10.0-torch2.7.1-cu126-py311-fa2.8.1-unsloth2025.8.10"
NO_GPU = "Unsloth currently only works on NVIDIA GPUs and Intel GPUs."


@pytest.fixture(scope="module")
def matrix():
    return matrix_mod.load(ROOT / "matrix.yaml")


@pytest.fixture(scope="module")
def row(matrix):
    return matrix.select([UNSLOTH_ROW])[0]


def test_the_unsloth_row_validates_offline_against_its_lock(matrix, row):
    """What validate checks besides uv's resolution (run by `build.py validate --row`): the schema (loading), a fresh
    lock holding the extras, every compatibility rule over the locked resolution, the rendered context up to date."""
    assert row.extras == {"pyarrow": "25.0.1", "unsloth": "2025.8.10", "unsloth-zoo": "2025.8.9"}
    assert (row.verl, row.vllm, row.transformers) == ("0.5.0", "0.10.0", "4.55.4")
    assert locks.lock_status(matrix, row) == "ok"
    resolution = lockfile.parse(locks.read_lock(matrix, row))
    assert {name: resolution[name].version for name in ("unsloth", "unsloth-zoo", "transformers", "vllm")} == {
        "unsloth": "2025.8.10", "unsloth-zoo": "2025.8.9", "transformers": "4.55.4", "vllm": "0.10.0"}
    checks = rules.evaluate(row, resolution)
    assert rules.to_errors(row, checks, matrix.path) == []
    (rendered,) = render.render(matrix, [row])
    context = ROOT / "dockerfiles" / "generated" / UNSLOTH_ROW
    assert {name: (context / name).read_bytes() for name in rendered.files} == rendered.files


def test_the_smoke_plan_includes_each_extra(row):
    plan = {c.dist: c for c in extras.smoke_plan(row)}
    assert set(plan) == {"pyarrow", "unsloth", "unsloth-zoo"}
    assert (plan["pyarrow"].module, plan["pyarrow"].how) == ("pyarrow", "import")
    for dist, module in (("unsloth", "unsloth"), ("unsloth-zoo", "unsloth_zoo")):
        assert (plan[dist].module, plan[dist].how, plan[dist].no_gpu_error) == (module, "find_spec", NO_GPU)
        assert "GPU suite imports it" in plan[dist].why
    # the GPU suite (no imagematrix in the image) imports the same modules, from the rendered row.json
    spec = gs.RowSpec.load(_row_json(UNSLOTH_ROW))
    assert gs.extra_modules(gs.Settings("image", spec)) == [
        ("pyarrow", "pyarrow"), ("unsloth", "unsloth"), ("unsloth-zoo", "unsloth_zoo")]


def test_gpu_only_entries_keep_the_module_the_gpu_suite_imports():
    for dist, entry in extras.load().items():
        if entry.no_gpu_error:
            assert entry.module == extras.default_module(dist), dist


def test_a_row_without_extras_has_an_empty_plan_and_an_unknown_extra_imports_by_its_name(matrix):
    base = matrix.select(["verl0.5.0-vllm0.10.0-torch2.7.1-cu126-py311-fa2.8.1"])[0]
    assert [c.dist for c in extras.smoke_plan(base)] == ["pyarrow"]
    assert extras.default_module("Foo.Bar-baz") == "foo_bar_baz"


@pytest.mark.parametrize("text, problem", [
    ("extras: []\n", "`extras:` mapping"),
    ("extras:\n  unsloth: {module: 'un-sloth', source: somewhere}\n", "invalid entry for 'unsloth'"),
    ("extras:\n  unsloth: {module: unsloth}\n", "source"),
    ("extras:\n  unsloth: {module: unsloth, source: a b c, gpu: yes}\n", "extra"),
    ("extras:\n  Unsloth: {module: unsloth, source: a b c}\n  unsloth: {module: unsloth, source: a b c}\n", "twice"),
])
def test_a_malformed_file_is_bad_input(tmp_path, text, problem):
    path = tmp_path / "extras.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=problem):
        extras.load(path)


class _Host:
    """testinfra's host.run, answered from a table: (what the command contains) -> (rc, stderr)."""

    def __init__(self, answers: dict[str, tuple[int, str]]):
        self.answers, self.commands = answers, []

    def run(self, command: str):
        self.commands.append(command)
        rc, stderr = next((v for k, v in self.answers.items() if k in command), (0, ""))
        return type("Result", (), {"rc": rc, "stderr": stderr, "stdout": ""})()


def test_the_cpu_smoke_test_accepts_only_the_recorded_no_gpu_error(row):
    from imagematrix.suites.cpu.test_image import test_extras_import

    no_gpu = f"Traceback (most recent call last):\nNotImplementedError: {NO_GPU}\n"
    host = _Host({"import unsloth_zoo'": (1, no_gpu), "import unsloth'": (1, no_gpu)})
    test_extras_import(host, row)
    assert sum("find_spec(\"unsloth\")" in c for c in host.commands) == 1
    assert any("'import pyarrow'" in c for c in host.commands)
    broken = _Host({"import unsloth'": (1, "ImportError: cannot import name 'X' from 'transformers'")})
    with pytest.raises(AssertionError, match=r"unsloth==2025.8.10: import unsloth failed \(expected only its no-GPU"):
        test_extras_import(broken, row)
    missing = _Host({'find_spec("unsloth_zoo")': (1, "")})
    with pytest.raises(AssertionError, match="unsloth-zoo==2025.8.9: module unsloth_zoo is not installed"):
        test_extras_import(missing, row)
