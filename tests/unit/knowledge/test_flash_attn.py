"""flash-attn facts (knowledge/flash_attn.py): the data file, the default architectures and the one constructor of
a row's wheel spec (its names: tests/unit/model/test_flash_attn_spec.py)."""

from __future__ import annotations

import pytest

from imagematrix.knowledge import flash_attn
from imagematrix.model import matrix as matrix_mod
from imagematrix.model.errors import InputError, InputErrors

# ---- compiling from the sdist: knowledge/flash-attn.yaml ------------------------------------------------------


def _row(**overrides):
    m = matrix_mod.load()
    row = next(r for r in m.rows if r.flash_attn == "2.8.3")
    return row.__class__(**{**row.__dict__, **overrides})


def test_default_archs_are_what_flash_attn_and_torch_both_support():
    row = _row(flash_attn_archs=None)
    assert list(flash_attn.wheel_spec(row).archs) == ["8.0", "9.0", "10.0", "12.0"]  # torch 2.11 cu130 has sm_75..sm_120
    assert list(flash_attn.wheel_spec(_row(flash_attn_archs=None, flash_attn="2.7.4.post1")).archs) == ["8.0", "9.0"]
    assert list(flash_attn.wheel_spec(_row()).archs) == ["9.0"]  # the row's own flash_attn_archs
    assert flash_attn.wheel_spec(_row()).key == "2.8.3-cu130-torch2.11.0-cp312-cxx11abiTRUE-sm90"
    assert flash_attn.wheel_spec(_row()).local_version == "cu13torch2.11cxx11abiTRUE"


def test_every_sdist_and_toolchain_line_is_hash_pinned():
    data = flash_attn.data()
    assert {"2.7.4.post1", "2.8.1", "2.8.3"} <= set(data.sdists)
    assert all(len(s.sha256) == 64 for s in data.sdists.values())
    assert any(line.startswith("nvidia-cuda-nvcc==13.0.") for line in flash_attn.toolchain("13.0"))
    assert flash_attn.toolchain("12.4") is None


@pytest.mark.parametrize(("text", "where", "says"), [
    ("sdists: []\narchs: []\nbuild_requirements: []\ntoolchains: {}\ncompile_cost: {core_seconds_per_unit: 1, units: 1}\n",
     ":1", "sdists"),
    ("sdists: {}\narchs: []\nbuild_requirements: ['pip==1']\ntoolchains: {}\ncompile_cost: {core_seconds_per_unit: 1, units: 1}\n",
     ":3", "--hash=sha256"),
    ("sdists: {}\narchs: [{flash_attn: '>=2.8', arch: '9', cuda: '>=12'}]\nbuild_requirements: []\ntoolchains: {}\n"
     "compile_cost: {core_seconds_per_unit: 1, units: 1}\n", ":2", "compute capability"),
    ("- a list\n", ":1", "the top level is a list, not a mapping"),
])
def test_a_malformed_data_file_is_bad_input_with_file_and_line(tmp_path, text, where, says):
    path = tmp_path / "flash-attn.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as failure:
        flash_attn.data.__wrapped__(path)
    assert str(path) in failure.value.where and failure.value.where.endswith(where) and says in str(failure.value)


@pytest.mark.parametrize(("extra", "says"), [
    ('    flash_attn_archs: ["9"]\n', "compute capability"),
    ('    flash_attn_archs: []\n', "each capability once"),
    ('    flash_attn_archs: ["9.0", "9.0"]\n', "each capability once"),
])
def test_flash_attn_archs_is_checked_in_the_matrix(write_matrix, extra, says):
    path = write_matrix(
        'defaults:\n  python: "3.11"\n  base: debootstrap:bookworm\nrows:\n'
        '  - {verl: "0.4.1", vllm: "0.8.5", torch: "2.6.0", cuda: "12.4", tensordict: "0.6.2", '
        'transformers: "4.51.3", flash_attn: "2.7.4.post1"}\n'
        '  - verl: "0.4.1"\n    vllm: "0.8.5"\n    torch: "2.6.0"\n    cuda: "12.4"\n    tensordict: "0.6.2"\n'
        '    transformers: "4.51.3"\n    flash_attn: "2.7.4.post1"\n    id: other\n' + extra)
    with pytest.raises((InputError, InputErrors)) as failure:
        matrix_mod.load(path)
    assert says in str(failure.value) and "flash_attn_archs" in str(failure.value)


def test_flash_attn_archs_without_flash_attn_is_an_error(write_matrix):
    path = write_matrix(
        'defaults:\n  python: "3.11"\n  base: debootstrap:bookworm\nrows:\n'
        '  - verl: "0.4.1"\n    vllm: "0.8.5"\n    torch: "2.6.0"\n    cuda: "12.4"\n    tensordict: "0.6.2"\n'
        '    transformers: "4.51.3"\n    flash_attn_archs: ["9.0"]\n')
    with pytest.raises((InputError, InputErrors), match="pins no flash_attn"):
        matrix_mod.load(path)


# ---- one spec per row (issue 27, item 2) ------------------------------------------------------------------------

import json  # noqa: E402
import re  # noqa: E402

from imagematrix import rules  # noqa: E402
from imagematrix.model import paths  # noqa: E402
from imagematrix.model.flash_attn import WheelSpec  # noqa: E402
from imagematrix.rules import flash_attn as flash_attn_rule  # noqa: E402
from imagematrix.stages import flash_attn as flash_attn_stage  # noqa: E402
from imagematrix.stages import plan, render  # noqa: E402

RELEASE_NAME = re.compile(r"flash_attn-(?P<version>[^-+]+)\+(?P<local>[^-]+)-(?P<py>cp\d+)-(?P<abi>cp\d+)-linux_x86_64\.whl")
# Compile records the project keeps: what flash_attn_compile.py named the wheel it compiled on a GPU host
COMPILE_RECORDS = [paths.ROOT / "bench" / "records" / "flash-attn-2.8.3-sm90-h200.json",
                   *sorted((paths.ROOT / "docs" / "gpu-runs" / "logs").glob("*.flash_attn_record.json"))]


def test_the_spec_is_built_once_per_row_and_rules_render_plan_and_the_stage_take_that_one(monkeypatch):
    built = []

    class Counted(WheelSpec):
        def __post_init__(self, table) -> None:
            built.append(self.version)
            super().__post_init__(table)

    monkeypatch.setattr(flash_attn, "WheelSpec", Counted)
    flash_attn._spec.cache_clear()
    try:
        m = matrix_mod.load()
        fa_rows = [r for r in m.rows if r.flash_attn]
        distinct = {(r.flash_attn, r.cuda, r.torch, r.python, r.flash_attn_archs) for r in fa_rows}
        assert len(fa_rows) > len(distinct) > 1, "the matrix has two rows sharing a wheel, and more than one wheel"
        ruleset = rules.load()
        rule = next(spec for spec in ruleset.rules if spec.kind == "flash-attn-wheel")
        render.render(m, list(m.rows))
        planned = plan.plan(m, list(m.rows), "r.example/o", ask_registry=False)
        plan.github_outputs(planned)
        for row in fa_rows:
            flash_attn_rule.check(rule, row, None, ruleset)
            flash_attn_stage.describe(flash_attn.wheel_spec(row), None)
            assert flash_attn.wheel_spec(row) is flash_attn.wheel_spec(row)
        assert len(built) == len(distinct), built
        assert all(type(flash_attn.wheel_spec(r)) is Counted for r in fa_rows)
        assert all(flash_attn.wheel_spec(r) is None for r in m.rows if not r.flash_attn)
    finally:
        flash_attn._spec.cache_clear()


def test_the_spec_agrees_with_the_committed_contexts_and_the_data():
    m = matrix_mod.load()
    for row in (r for r in m.rows if r.flash_attn):
        spec = flash_attn.wheel_spec(row)
        name = RELEASE_NAME.fullmatch(spec.filename)
        assert name and name["version"] == spec.version == row.flash_attn and name["py"] == name["abi"] == spec.cp
        assert name["local"] == spec.local_version == f"cu{spec.cuda_major}torch{spec.torch_mm}cxx11abi{spec.abi}"
        assert spec.fits(spec.filename) and spec.release_path == f"v{row.flash_attn}/{spec.filename}"
        assert spec.key == (f"{row.flash_attn}-cu{row.cuda.replace('.', '')}-torch{row.torch}-{spec.cp}-cxx11abi"
                            f"{spec.abi}-" + "-".join(f"sm{a}" for a in spec.arch_tags))
        assert spec.abi == ("TRUE" if spec.cxx11abi else "FALSE") and spec.table_key[3] is spec.cxx11abi
        dockerfile = (paths.ROOT / "dockerfiles" / "generated" / row.id / "Dockerfile").read_text()
        assert f'io.imagematrix.flash-attn.wheel="{spec.key}"' in dockerfile
        release = flash_attn.prebuilt_release(row.flash_attn)
        assert spec.prebuilt == (release.evidence if release and spec.table_key in release.wheels() else None)


@pytest.mark.parametrize("path", COMPILE_RECORDS, ids=lambda p: p.name)
def test_the_spec_names_the_wheel_a_real_compile_wrote(path):
    record = json.loads(path.read_text())
    torch = record["torch"].split("+")[0]
    row = next(r for r in matrix_mod.load().rows if r.flash_attn and record["sdist"] == f"flash_attn-{r.flash_attn}.tar.gz"
               and r.torch == torch and r.cuda == record["torch_cuda"]
               and flash_attn.wheel_spec(r).arch_tags == tuple(record["archs"]))
    spec = flash_attn.wheel_spec(row)
    assert spec.local_version == record["local_version"] and spec.cxx11abi is record["cxx11_abi"]
    assert spec.fits(record["wheel"]) and record["sdist"] == flash_attn.sdist(spec.version).file


def test_every_wheel_of_the_table_round_trips_through_the_spec():
    for release in flash_attn.data().prebuilt_wheels:
        wheels = release.wheels()
        for cuda, torch, python, abi in wheels:
            version = release.versions[0]
            spec = WheelSpec(version=version, cuda=f"{cuda}.0", torch=f"{torch}.0", python=python,
                             table=lambda key, wheels=wheels, release=release: release.evidence if key in wheels else None)
            if spec.cxx11abi != abi:  # the table lists both ABIs for older torch: a spec follows PyPI torch's
                continue
            assert spec.table_key == (cuda, torch, python, abi) and spec.prebuilt == release.evidence
            assert spec.fits(spec.filename) and f"+cu{cuda}torch{torch}cxx11abi{'TRUE' if abi else 'FALSE'}-" in spec.filename
