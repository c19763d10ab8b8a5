"""Issue 26, item 3: `re.match` with `^...$` lets one trailing newline through (`$` matches before it). Every
pattern that validates input refuses a valid value with "\\n" appended, whichever way it is applied (match, search,
fullmatch), and so does every field that uses one; a matrix with `cuda: "12.4\\n"` or an id ending in a newline is
bad input (exit 2 at its place), not an internal error."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from imagematrix.assist import cluster
from imagematrix.in_image import flash_attn_compile
from imagematrix.knowledge import patches
from imagematrix.model import fields, gpurun, tags
from tests.conftest import GOOD_MATRIX, GOOD_ROW

# one valid value of each pattern of model/fields.py (a new pattern there must add one: see the first test)
FIELD_EXAMPLES = {
    "PACKAGE_RE": "flash-attn",
    "ENV_NAME_RE": "NCCL_DEBUG",
    "ENV_VALUE_RE": "INFO",
    "PYTHON_RE": "3.11",
    "CUDA_RE": "12.4",
    "PATCH_ID_RE": "vllm-pt-weights-no-empty-cache",
    "REASON_RE": "the reason, ten characters or more",
    "IMAGE_REF_RE": "nvidia/cuda:12.4.1-runtime-ubuntu22.04",
    "MANIFEST_DIGEST_RE": "sha256:" + "a" * 64,
    "CAPABILITY_RE": "9.0",
    "REGISTRY_RE": "ghcr.io/me",
}
# the other patterns that validate input elsewhere (row ids, patch files and scopes, cluster names, --archs, dates)
OTHER_EXAMPLES = {
    "tags.TAG_RE": (tags.TAG_RE, "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311"),
    "patches.FILE_RE": (patches.FILE_RE, "vllm/worker/model_runner.py"),
    "patches.SCOPE_RE": (patches.SCOPE_RE, "ModelRunner.load_model"),
    "cluster.NAME_RE": (cluster.NAME_RE, "imagematrix-cluster-1"),
    "flash_attn_compile.ARCHS_RE": (flash_attn_compile.ARCHS_RE, "80;90"),
    "gpurun.DATE_RE": (gpurun.DATE_RE, "2026-12-02"),
}
PATTERNS = {**{name: (getattr(fields, name), text) for name, text in FIELD_EXAMPLES.items()}, **OTHER_EXAMPLES}


def test_every_pattern_of_fields_has_an_example():
    found = {name for name, value in vars(fields).items() if isinstance(value, re.Pattern)}
    assert found == set(FIELD_EXAMPLES)


@pytest.mark.parametrize("name", sorted(PATTERNS))
@pytest.mark.parametrize("tail", ["\n", "\r\n", "\n\n"])
def test_a_valid_value_with_a_trailing_newline_is_refused_however_applied(name, tail):
    pattern, text = PATTERNS[name]
    assert pattern.fullmatch(text) and pattern.match(text), (name, text)
    for apply in (pattern.match, pattern.search, pattern.fullmatch):
        assert apply(text + tail) is None, (name, apply.__name__)


@pytest.mark.parametrize("name", sorted(PATTERNS))
@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_no_value_of_a_pattern_passes_it_with_a_trailing_newline(name, data):
    """Property: whatever value a pattern accepts whole, that value plus a newline it refuses."""
    pattern = PATTERNS[name][0]
    text = data.draw(st.from_regex(pattern, fullmatch=True), label=name)
    assert pattern.match(text + "\n") is None, (name, text)


def _row(**value) -> dict:
    row = {"verl": "0.3.0.post1", "vllm": "0.7.2", "torch": "2.5.1", "cuda": "12.4", "tensordict": "0.6.2",
           "transformers": "4.49.0", "python": "3.11", "base": "debootstrap:bookworm"}
    return {**row, **value}


REASON = "deliberately skipped for this row"


@pytest.mark.parametrize("value", [
    {"id": "myrow\n"}, {"cuda": "12.4\n"}, {"python": "3.11\n"},
    {"base": "nvidia/cuda:12.4.1-runtime-ubuntu22.04\n"}, {"base": "debootstrap:bookworm\n"},
    {"env": {"NCCL_DEBUG\n": "INFO"}}, {"env": {"NCCL_DEBUG": "INFO\n"}},
    {"rollout_only": REASON + "\n"}, {"skip_patches": {"vllm-pt-weights-no-empty-cache": REASON + "\n"}},
    {"skip_patches": {"vllm-pt-weights-no-empty-cache\n": REASON}},
    {"extras": {"ray\n": "2.40.0"}}, {"verl_extras": ["core\n"]}, {"flash_attn_archs": ["9.0\n"]}, {"gpus": ["H100\n"]}, {"gpus_jit": ["B200\n"]},
    {"overrides": {"vllm": {"version": "0.7.2", "reason": REASON + "\n"}}},
], ids=lambda v: repr(v)[:60])
def test_every_field_refuses_a_trailing_newline(value):
    assert fields.RowFields.model_validate(_row())  # the row itself is good
    with pytest.raises(ValidationError):
        fields.RowFields.model_validate(_row(**value))


@pytest.mark.parametrize("check", [fields.check_python, fields.check_registry])
def test_command_line_values_refuse_a_trailing_newline(check):
    text = {fields.check_python: "3.11", fields.check_registry: "ghcr.io/me"}[check]
    assert check(text) == text
    with pytest.raises(ValueError):
        check(text + "\n")


@pytest.mark.parametrize(("replace", "by", "field"), [
    ('    cuda: "12.4"\n', '    cuda: "12.4\\n"\n', "field cuda"),
    ('  - verl: "0.3.0.post1"\n', '  - id: "myrow\\n"\n    verl: "0.3.0.post1"\n', "field id"),
])
@pytest.mark.parametrize("command", ["validate", "render"])
def test_a_matrix_value_ending_in_a_newline_is_bad_input_at_its_line(replace, by, field, command, run, write_matrix,
                                                                     tmp_path):
    path = write_matrix(GOOD_MATRIX.replace(GOOD_ROW, GOOD_ROW.replace(replace, by)))
    assert by in path.read_text()
    result = run(command, "--matrix", path)
    assert result.code == 2, result
    assert re.search(rf"{re.escape(str(path))}:\d+, row #1, {field}: ", result.err), result
    assert "internal error" not in result.err and "fix:" in result.err, result
    assert sorted(p.name for p in tmp_path.iterdir()) == ["matrix.yaml"]  # no locks/, no dockerfiles/
