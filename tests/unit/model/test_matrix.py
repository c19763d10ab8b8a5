"""Bad matrix input: exit 2, a message naming file, row and field with a fix, and nothing written."""

from __future__ import annotations

import pytest

from imagematrix.model import matrix
from tests.conftest import GOOD_MATRIX, GOOD_ROW


def test_good_matrix_loads_with_defaults_and_derived_id(write_matrix):
    m = matrix.load(write_matrix(GOOD_MATRIX))
    (row,) = m.rows
    assert row.id == "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311"
    assert row.python == "3.11" and row.base == "debootstrap:bookworm"
    assert row.pins() == {"verl": "0.3.0.post1", "vllm": "0.7.2", "torch": "2.5.1",
                          "tensordict": "0.6.2", "transformers": "4.49.0"}


def test_a_row_declares_its_gpus_by_name_or_capability(write_matrix):
    (row,) = matrix.load(write_matrix(_with("    gpus: [H100, A100, L40S, sm_89]\n    gpus_jit: [B200, \"RTX 5090\", 12.1]\n"
                                            .replace("12.1", '"12.1"')))).rows
    assert row.gpus == ("H100", "A100", "L40S", "sm_89") and row.gpus_jit == ("B200", "RTX 5090", "12.1")
    assert matrix.load(write_matrix(GOOD_MATRIX)).rows[0].gpus == ()  # optional


def test_an_unknown_gpu_names_file_line_row_and_field(run, write_matrix):
    path = write_matrix(GOOD_MATRIX + GOOD_ROW.replace('"0.7.2"', '"0.7.3"') + "    gpus: [A100, Voodoo5]\n")
    result = run("validate", "--matrix", path)
    assert result.code == 2
    assert f"{path}:12, row #2, field gpus.1" in result.err and "'Voodoo5' is not a GPU" in result.err


def test_real_matrix_loads():
    m = matrix.load()
    assert len(m.rows) >= 6
    assert len({r.id for r in m.rows}) == len(m.rows)


def _with(field_line: str, replace: str | None = None) -> str:
    row = GOOD_ROW if replace is None else GOOD_ROW.replace(replace, field_line)
    if replace is None:
        row = row + field_line
    return GOOD_MATRIX.replace(GOOD_ROW, row)


BAD = {
    "invalid-yaml": ("defaults: [\nrows: {", "invalid YAML", "matrix.yaml:2"),
    "unknown-row-key": (_with("    flashattn: \"2.7.4\"\n"), "unknown key", "field flashattn"),
    "unknown-top-key": (GOOD_MATRIX + "images: []\n", "unknown top-level key", "images"),
    "missing-key": (_with('    vllm: "0.7.2"\n', '    vllm: "0.7.2"\n    torch: "2.5.1"\n').replace('    vllm: "0.7.2"\n', "", 0)
                    .replace('    cuda: "12.4"\n', ""), "missing required key `cuda`", "row #1"),
    "latest": (_with('    vllm: "latest"\n', '    vllm: "0.7.2"\n'), "not an exact PEP 440 version", "field vllm"),
    "range": (_with('    vllm: ">=0.7"\n', '    vllm: "0.7.2"\n'), "not an exact PEP 440 version", "field vllm"),
    "yaml-float": (_with("    transformers: 4.49\n", '    transformers: "4.49.0"\n'), "quote it", "field transformers"),
    "non-canonical": (_with('    torch: "2.5.1-1"\n', '    torch: "2.5.1"\n'), "canonical form", "field torch"),
    "shell-in-env": (_with("    env:\n      NCCL_DEBUG: \"INFO; rm -rf /\"\n"), "not a valid environment value", "field env.NCCL_DEBUG"),
    "newline-in-env": (_with("    env:\n      NCCL_DEBUG: \"INFO\\nRUN evil\"\n"), "not a valid environment value", "field env.NCCL_DEBUG"),
    "bad-env-name": (_with("    env:\n      \"A-B\": \"1\"\n"), "not a valid environment variable name", "field env.A-B"),
    "shell-in-extras-name": (_with("    extras:\n      \"ray;id\": \"2.40.0\"\n"), "not a valid package name", "field extras"),
    "bad-id": (_with('    id: "has space"\n'), "not a valid row id", "field id"),
    "bad-base": (_with("    base: \"nvidia/cuda:12.4 && curl evil\"\n"), "not a valid image reference", "field base"),
    "base-without-tag": (_with("    base: nvidia/cuda\n"), "not a valid image reference", "field base"),
    "unknown-suite": (_with("    base: debootstrap:sid\n"), "unknown debootstrap suite", "field base"),
    "python-not-in-suite": (_with('    python: "3.10"\n'), "not packaged by bookworm", "field python"),
    "python-format": (_with('    python: "3.11.7"\n'), "not a valid Python version", "field python"),
    "override-without-reason": (_with('    overrides:\n      vllm:\n        version: "0.7.2"\n'), "Field required", "overrides.vllm.reason"),
    "override-disagrees": (_with('    overrides:\n      vllm:\n        version: "0.7.3"\n        reason: deliberately different version\n'),
                           "disagrees", "overrides.vllm"),
    "reason-with-dollar": (_with('    skip_patches:\n      vllm-pt-weights-no-empty-cache: "costs $HOME time"\n'), "not a valid reason", "skip_patches"),
    "extras-repins-row-key": (_with('    extras:\n      torch: "2.5.1"\n'), "already pins", "extras.torch"),
    "verl-extras-vllm": (_with("    verl_extras: [vllm]\n"), "verl_extras lists", "field verl_extras"),
    "verl-extras-shell": (_with('    verl_extras: ["core;id"]\n'), "not a valid package name", "field verl_extras"),
    "unknown-gpu": (_with("    gpus: [H100, H1000]\n"), "'H1000' is not a GPU of knowledge/gpus.yaml", "field gpus.1"),
    "unknown-gpu-jit": (_with("    gpus_jit: [sm_99]\n"), "'sm_99' is not a GPU of knowledge/gpus.yaml", "field gpus_jit.0"),
    "gpu-twice": (_with("    gpus: [H100, h100]\n"), "gpus lists a GPU twice", "field gpus"),
    "gpu-in-both": (_with("    gpus: [H100, A100]\n    gpus_jit: [B200, a100]\n"), "A100 is in both gpus and gpus_jit",
                    "field gpus_jit"),
    "gpus-not-a-list": (_with("    gpus: H100\n"), "valid list", "field gpus"),
    "duplicate-ids": (GOOD_MATRIX + GOOD_ROW, "duplicate row id", "row #2"),
    "duplicate-yaml-key": (_with('    vllm: "0.7.1"\n'), "invalid YAML", ""),
    "empty-rows": ('defaults:\n  python: "3.11"\nrows: []\n', "non-empty list", ""),
    "id-in-defaults": (GOOD_MATRIX.replace("defaults:\n", "defaults:\n  id: x\n"), "cannot have a default", "defaults"),
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("command", ["validate", "render"])
def test_bad_input_exits_2_names_place_and_writes_nothing(case, command, run, write_matrix, tmp_path):
    text, message, where = BAD[case]
    path = write_matrix(text)
    result = run(command, "--matrix", path)
    assert result.code == 2, result
    assert message in result.err, result
    assert where in result.err, result
    assert str(path) in result.err
    assert "fix:" in result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["matrix.yaml"]  # no locks/, no dockerfiles/


def test_all_errors_reported_in_one_pass(run, write_matrix):
    text = GOOD_MATRIX.replace('    vllm: "0.7.2"\n', '    vllm: "latest"\n') + GOOD_ROW + "    colour: red\n"
    result = run("validate", "--matrix", write_matrix(text))
    assert result.code == 2
    assert "row #1, field vllm" in result.err and "row #2, field colour" in result.err


def test_unknown_row_selected(run):
    result = run("render", "--check", "--row", "no-such-row")
    assert result.code == 2 and "no row with id 'no-such-row'" in result.err and "use one of" in result.err


def test_missing_matrix_file(run, tmp_path):
    result = run("validate", "--matrix", tmp_path / "nope.yaml")
    assert result.code == 2 and "file not found" in result.err


def test_row_id_tools_is_reserved_for_the_build_tools_lock(write_matrix, run):
    path = write_matrix(GOOD_MATRIX.replace("  - verl:", "  - id: tools\n    verl:", 1))
    result = run("validate", "--matrix", path)
    assert result.code == 2 and "row id 'tools' is reserved" in result.err


def test_a_huge_matrix_is_refused_before_parsing(tmp_path, run):
    path = tmp_path / "matrix.yaml"
    path.write_text("# " + "x" * 1_100_000 + "\nrows: []\n")
    result = run("validate", "--matrix", path)
    assert result.code == 2 and "over the limit" in result.err


@pytest.mark.parametrize(("text", "line", "message"), [
    ("# bases\n- bookworm\n", 2, "the top level is a list, not a mapping with a `debootstrap:` mapping"),
    ('debootstrap:\n  bookworm:\n    distro: debian\n    mirror: http://x\n    python: "3.11"\n', 2,
     "suite 'bookworm': python: Input should be a valid list"),  # was reported against matrix.yaml as "3, ., 1, 1"
    # a suite that is a string, not a mapping (issue 13, item 6)
    ('# bases\ndebootstrap:\n  bookworm: debian\n', 3, "suite 'bookworm': value: Input should be a valid dictionary"),
    ("# bases\ndebootstrap: bookworm\n", 2, "expected a mapping with a `debootstrap:` mapping"),  # named no line
])
def test_a_malformed_bases_file_is_bad_input_naming_that_file(tmp_path, monkeypatch, run, text, line, message):
    from imagematrix.model import fields, paths

    bases = tmp_path / "bases.yaml"
    bases.write_text(text)
    monkeypatch.setattr(paths, "BASES", bases)
    fields.bootstrap_suites.cache_clear()
    try:
        result = run("validate", "--matrix", paths.MATRIX)
    finally:
        fields.bootstrap_suites.cache_clear()
    assert result.code == 2 and f"error: {bases}:{line}: {message}" in result.err, result
    assert "Traceback" not in result.err and "internal error" not in result.err


@pytest.mark.parametrize(("extra", "named"), [
    ("1: x\n", "1"),
    ("? [a]\n: b\n", "('a',)"),
    ("null: x\n", "None"),
    ("true: x\n", "True"),
    ("1: x\nfoo: y\n", "1, foo"),      # keys of types that do not sort together: was an internal error (TypeError)
    ("? [a]\n: b\n2: c\n", "('a',), 2"),
])
def test_non_string_top_level_keys_are_bad_input_at_their_line(write_matrix, run, extra, named):
    """Issue 13, item 6: the first unknown key's line, keys in file order, exit 2, never a traceback."""
    path = write_matrix(GOOD_MATRIX + extra)
    line = GOOD_MATRIX.count("\n") + 1
    result = run("validate", "--matrix", path)
    assert result.code == 2, result
    assert f"error: {path}:{line}: unknown top-level key(s): {named}" in result.err, result
    assert "internal error" not in result.err and "Traceback" not in result.err
