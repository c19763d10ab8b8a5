"""linux/arm64 rows (issue 29): the aarch64 wheels of the native packages, as knowledge/platform-wheels.yaml records
them, the records its writer makes from an index page, and the refusal of a platform the pins cannot serve."""

from __future__ import annotations

import pytest

from imagematrix.assist import platform_wheels as writer
from imagematrix.knowledge import platform_wheels
from imagematrix.model import matrix
from imagematrix.model.errors import InputError
from imagematrix.stages import locks, resolve
from imagematrix.tools import pypi_releases
from tests.conftest import GOOD_MATRIX


def test_the_committed_data_knows_the_issue_s_packages():
    data = platform_wheels.load()
    for name in ("vllm", "torch", "flash-attn", "xformers", "deep-gemm", "flashinfer-cubin", "flashinfer-jit-cache"):
        assert name in data.packages
    # what the rows of issue 29 pin has aarch64 wheels; what the verl 0.3 row pins has not
    assert platform_wheels.aarch64_wheel("vllm", "0.31.0", "3.11") is True
    assert platform_wheels.aarch64_wheel("torch", "2.11.0", "3.11") is True
    assert platform_wheels.aarch64_wheel("vllm", "0.7.2", "3.11") is False
    assert platform_wheels.aarch64_wheel("flash-attn", "2.8.3", "3.12") is False  # sdists only on the index
    assert platform_wheels.aarch64_wheel("vllm", "99.0", "3.11") is None  # read before it: uv decides
    assert "vllm" in platform_wheels.native_packages() and "flash-attn" in platform_wheels.native_packages()
    assert "flashinfer-jit-cache" not in platform_wheels.native_packages()  # not on the index at all


@pytest.mark.parametrize(("tag", "python", "serves"), [
    ("cp311", "3.11", True), ("cp312", "3.11", False), ("cp38-abi3", "3.11", True), ("cp312-abi3", "3.11", False),
    ("py3", "3.12", True), ("py311", "3.11", True), ("py310", "3.11", False), ("pp311", "3.11", False)])
def test_a_python_tag_serves_the_pythons_it_names(tag, python, serves):
    assert platform_wheels.tag_serves(tag, python) is serves


def test_missing_wheels_names_each_package_and_where_wheels_are():
    lines = platform_wheels.missing_wheels({"vllm": "0.7.2", "torch": "2.13.0", "flash-attn": "2.8.3"}, "3.11")
    assert len(lines) == 2
    assert lines[0].startswith("vllm 0.7.2 has no linux aarch64 wheel for Python 3.11 (the index has one for ")
    assert "flash-attn 2.8.3" in lines[1] and "no aarch64 wheel of any release" in lines[1]


def test_the_writer_classifies_files_by_arch_python_and_glibc():
    files = [pypi_releases.File("pkg-1.0-cp311-cp311-manylinux_2_28_aarch64.whl"),
             pypi_releases.File("pkg-1.0-cp311-cp311-manylinux_2_28_x86_64.whl"),
             pypi_releases.File("pkg-1.0-pp311-pypy311_pp73-manylinux_2_28_aarch64.whl"),
             pypi_releases.File("pkg-0.9-cp311-cp311-manylinux_2_39_aarch64.whl"),  # newer glibc than the bases
             pypi_releases.File("pkg-0.9-cp311-cp311-manylinux2014_x86_64.whl"),
             pypi_releases.File("pkg-0.8.tar.gz"),
             pypi_releases.File("pkg-1.1-cp311-cp311-manylinux_2_28_aarch64.whl", yanked=True),
             pypi_releases.File("pkg-2.0rc1-py3-none-any.whl")]
    record = writer.classify("pkg", files)
    assert record == {"native": True, "aarch64": {"1.0": ["cp311"]}, "x86_64_only": ["0.9"], "sdist_only": ["0.8"]}
    assert writer.classify("flash-attn", [pypi_releases.File("flash_attn-2.8.3.tar.gz")])["native"] is True


def test_the_written_file_loads_back(tmp_path, monkeypatch):
    text = writer.render({"pkg": {"native": True, "aarch64": {"1.0": ["cp311", "py3"]}, "x86_64_only": ["0.9"],
                                  "sdist_only": []}, "gone": writer.ABSENT}, "https://u:secret@idx/simple", "2026-12-07")
    assert "secret" not in text
    path = tmp_path / "platform-wheels.yaml"
    path.write_text(text)
    monkeypatch.setattr(platform_wheels, "PLATFORM_WHEELS", path)
    platform_wheels.load.cache_clear()
    try:
        assert platform_wheels.aarch64_wheel("pkg", "1.0", "3.12") is True
        assert platform_wheels.aarch64_wheel("pkg", "0.9", "3.12") is False
        assert platform_wheels.native_packages() == ("pkg",)
        path.write_text(text.replace("cp311", "cp3x"))
        platform_wheels.load.cache_clear()
        with pytest.raises(InputError, match="'cp3x' is not a Python tag"):
            platform_wheels.load()
    finally:
        platform_wheels.load.cache_clear()


def _arm_row(write_matrix, pins: str = ""):
    text = GOOD_MATRIX.replace("  - verl:", "  - platforms: [linux/amd64, linux/arm64]\n    verl:", 1)
    return matrix.load(write_matrix(text + pins))


def test_a_row_names_its_platforms_amd64_first(write_matrix):
    m = _arm_row(write_matrix)
    assert m.rows[0].platforms == ("linux/amd64", "linux/arm64")
    assert matrix.load(write_matrix(GOOD_MATRIX)).rows[0].platforms == ("linux/amd64",)


@pytest.mark.parametrize(("value", "message"), [
    ("[linux/arm64]", "linux/amd64 among them"), ("[linux/amd64, linux/amd64]", "each platform once"),
    ("[linux/s390x]", "'linux/s390x' is not a platform")])
def test_bad_platforms_are_refused_naming_the_field(run, write_matrix, value, message):
    path = write_matrix(GOOD_MATRIX.replace("  - verl:", f"  - platforms: {value}\n    verl:", 1))
    result = run("validate", "--matrix", path)
    assert result.code == 2 and "field platforms" in result.err and message in result.err


def test_arm64_pins_without_aarch64_wheels_are_refused_before_uv(write_matrix, monkeypatch):
    (row,) = _arm_row(write_matrix).rows  # verl 0.3 + vLLM 0.7.2: neither vllm nor tensordict ship aarch64 wheels
    monkeypatch.setattr(resolve, "declared_conflicts", lambda row: [])
    monkeypatch.setattr(resolve, "compile_", lambda *a, **k: pytest.fail("uv ran"))
    with pytest.raises(InputError) as caught:
        resolve.resolve(row, platform="linux/arm64")
    text = caught.value.render()
    assert "field platforms" in text and "vllm 0.7.2 has no linux aarch64 wheel" in text
    assert "tensordict 0.6.2" in text and "remove linux/arm64" in text


def test_uv_s_no_wheel_answer_names_the_package():
    row = matrix.load().rows[0]
    message = ("No solution found when resolving dependencies:\n  Because tensordict==0.6.2 has no wheels with a "
               "matching platform tag (e.g., `manylinux_2_35_aarch64`) and you require tensordict==0.6.2, ...")
    error = resolve._platform_conflict(row, "linux/arm64", message)
    assert error.render().count("no linux aarch64 wheel of tensordict 0.6.2 on the index") == 1


def test_the_arm64_input_digest_differs_and_amd64_s_is_unchanged():
    row = matrix.load().rows[0]
    amd64, arm64 = resolve.inputs(row), resolve.inputs(row, "linux/arm64")
    assert amd64.uv_platform == "x86_64-manylinux_2_35" and arm64.uv_platform == "aarch64-manylinux_2_35"
    assert amd64.digest() != arm64.digest()
    committed = locks.lock_path(matrix.load(), row).read_text()
    assert f"# input-digest: {amd64.digest()}" in committed  # the committed amd64 lock stays current


def test_an_arm64_lock_lives_under_its_platform(write_matrix):
    m = _arm_row(write_matrix)
    row = m.rows[0]
    assert locks.lock_path(m, row) == m.root / "locks" / f"{row.id}.txt"
    assert locks.lock_path(m, row, "linux/arm64") == m.root / "locks" / "linux-arm64" / f"{row.id}.txt"
    assert locks.row_platforms([row]) == [(row, "linux/amd64"), (row, "linux/arm64")]
