"""Source patches against the real files of the vLLM 0.7.x wheels on PyPI.

Only the three patched files are read, by HTTP range requests into the wheels (a few hundred KB instead of
260 MB per wheel), and cached under ~/.cache/imagematrix. Nothing of vLLM is committed.
"""

from __future__ import annotations

import json

import pytest

from imagematrix.in_image import patch_apply
from imagematrix.knowledge import patches
from imagematrix.model import matrix
from imagematrix.model.errors import InputError
from imagematrix.stages import render
from tests.conftest import GOOD_MATRIX

ALL = patches.load()


def test_the_two_layouts_of_the_world_size_check_match_one_anchor():
    patch = {p.id: p for p in ALL}["vllm-parallel-state-world-size"].model_dump()
    body = '        raise RuntimeError(\n            f"world_size ({world_size}) is not equal to "\n            f"x")\n'
    v070 = "def initialize_model_parallel():\n    if (world_size !=\n            tensor_model_parallel_size * pipeline_model_parallel_size):\n" + body + "    x = 1\n"
    v071 = "def initialize_model_parallel():\n    if (world_size\n            != tensor_model_parallel_size * pipeline_model_parallel_size):\n" + body + "    x = 1\n"
    for text in (v070, v071):
        out = patch_apply.apply_text(text, patch)
        assert "RuntimeError" not in out and out.endswith("    x = 1\n")


@pytest.mark.parametrize(("vllm", "expected"), [("0.6.6", 0), ("0.7.0", 3), ("0.7.1", 3), ("0.7.2", 3),
                                                ("0.7.3", 0), ("0.8.5", 0)])
def test_rows_pick_up_patches_by_version(write_matrix, vllm, expected):
    row = matrix.load(write_matrix(GOOD_MATRIX.replace('vllm: "0.7.2"', f'vllm: "{vllm}"'))).rows[0]
    assert len(patches.select(row, ALL).applied) == expected


def test_row_can_opt_out_with_a_reason(write_matrix):
    text = GOOD_MATRIX + "    skip_patches:\n      vllm-pt-weights-no-empty-cache: we want the cache flushed per shard\n"
    selection = patches.select(matrix.load(write_matrix(text)).rows[0], ALL)
    assert [p.id for p in selection.applied] == ["vllm-parallel-state-world-size", "vllm-external-launcher-local-rank"]
    assert selection.skipped == {"vllm-pt-weights-no-empty-cache": "we want the cache flushed per shard"}


def test_opting_out_of_an_unknown_patch_is_an_error(write_matrix):
    text = GOOD_MATRIX + "    skip_patches:\n      no-such-patch: because it does not exist\n"
    with pytest.raises(InputError, match="unknown patch"):
        patches.select(matrix.load(write_matrix(text)).rows[0], ALL)


GOOD_PATCH = """\
patches:
  - id: demo
    package: vllm
    versions: ">=0.7.0,<0.7.3"
    file: vllm/x.py
    description: demo
    anchor: '^(?P<i>[ ]*)a = 1\\n'
    replacement: '\\g<i>a = 2\\n'
    check: "a = 2"
"""


@pytest.mark.parametrize(("change", "message"), [
    (("versions: \">=0.7.0,<0.7.3\"", "versions: \"around 0.7\""), "not a PEP 440 specifier"),
    (("anchor: '^(?P<i>[ ]*)a = 1\\n'", "anchor: '(unclosed'"), "not a valid regular expression"),
    (("\\g<i>a = 2", "\\g<indent>a = 2"), "does not define"),
    (("\\g<i>a = 2", "\\qa = 2"), "not a valid template"),  # bad escape: used to fail only inside the build
    (("\\g<i>a = 2", "\\9a = 2"), "not a valid template"),  # group 9 of an anchor with one group
    (("check: \"a = 2\"", "check: \"a = 1\\n\""), "matches the anchor"),
    (("file: vllm/x.py", "file: vllm/../../etc/passwd.py"), "leaves the package directory"),
    (("    description: demo\n", ""), "Field required"),
    (("    check: \"a = 2\"\n", "    check: \"a = 2\"\n    line: 12\n"), "Extra inputs"),
    (("patches:\n", "patch:\n"), "one key, `patches:`"),
])
def test_malformed_patch_file_exits_2(tmp_path, run, change, message):
    (tmp_path / "bad.yaml").write_text(GOOD_PATCH.replace(*change))
    result = run("render", "--patches", tmp_path, "--check")
    assert result.code == 2, result
    assert message in result.err and "bad.yaml" in result.err


def test_good_patch_file_loads(tmp_path):
    (tmp_path / "ok.yaml").write_text(GOOD_PATCH)
    assert [p.id for p in patches.load(tmp_path)] == ["demo"]


def test_the_in_image_applier_reports_a_bad_replacement_as_a_patch_failure():
    """A replacement that slipped past validation (an older patches.json) is a clean PATCH FAILED, no traceback."""
    patch = {"id": "demo", "file": "x.py", "anchor": "^a = 1$", "replacement": "\\q", "check": "b", "scope": None}
    with pytest.raises(patch_apply.PatchError, match="not a valid template"):
        patch_apply.apply_text("a = 1\n", patch)


@pytest.mark.parametrize("name", ["vLLM", "VLLM", "Vllm"])
def test_a_patch_names_its_package_in_any_case(tmp_path, name):
    """Issue 26, item 9: `package: vLLM` crashed render (KeyError: the row's pins are keyed `vllm`); package names
    are compared PEP 503 normalized, and the image's patches.json carries the normalized name."""
    (tmp_path / "ok.yaml").write_text(GOOD_PATCH.replace("package: vllm", f"package: {name}"))
    m = matrix.load()
    row = next(r for r in m.rows if r.vllm == "0.7.2")
    assert [p.id for p in patches.select(row, patches.load(tmp_path)).applied] == ["demo"]
    rendered = render.render(m, [row], tmp_path)[0]
    assert [(p["package"], p["version"]) for p in json.loads(rendered.files["patches.json"])] == [("vllm", "0.7.2")]
