"""tools/cuobjdump: parsing `--list-elf --list-ptx`, and real runs on the ELF fixtures (tests/fixtures/cuda)."""

from __future__ import annotations

import os

import pytest

from imagematrix.model.errors import RuntimeFailure
from imagematrix.tools import cuobjdump
from tests.conftest import ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "cuda"
needs_cuobjdump = pytest.mark.skipif(
    cuobjdump.find() is None, reason=f"cuobjdump is not installed ({cuobjdump.INSTALL_HINT}; it is in the test extra)")


def test_parses_a_real_listing():
    sass, ptx = cuobjdump.parse((FIXTURES / "libnvjpeg.list.txt").read_text())
    assert sass == {"sm_75", "sm_80", "sm_86", "sm_89", "sm_90", "sm_100", "sm_103", "sm_107", "sm_120", "sm_121"}
    assert ptx == {"compute_121"}


def test_parses_arch_and_family_specific_names():
    # made up in cuobjdump's format (no library at hand carries a or f entries and is small enough to keep)
    listing = ("ELF file    1: libx.so.1.sm_90a.cubin\nELF file    2: libx.so.2.sm_100f.cubin\n"
               "PTX file    1: libx.so.1.sm_100a.ptx\nPTX file   12: libx.so.12.sm_120f.ptx\n")
    assert cuobjdump.parse(listing) == ({"sm_90a", "sm_100f"}, {"compute_100a", "compute_120f"})


def test_an_entry_without_a_readable_architecture_fails_naming_it():
    with pytest.raises(RuntimeFailure, match="libx.so.1.weird.cubin"):
        cuobjdump.parse("ELF file    1: libx.so.1.weird.cubin\n")


def test_other_lines_are_ignored():
    assert cuobjdump.parse("cuobjdump info    : No PTX file found\n\nFatbin elf code:\n") == (set(), set())


def _fake(tmp_path, monkeypatch, script: str):
    fake = tmp_path / "cuobjdump"
    fake.write_text("#!/bin/sh\n" + script + "\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CUOBJDUMP", str(fake))


def test_a_run_past_its_deadline_is_a_runtime_failure(tmp_path, monkeypatch):
    _fake(tmp_path, monkeypatch, "exec sleep 30")
    with pytest.raises(RuntimeFailure, match="did not finish within 0.5 s"):
        cuobjdump.list_archs(tmp_path / "lib.so", timeout=0.5)


def test_cuobjdump_named_but_missing_is_not_installed(tmp_path, monkeypatch):
    monkeypatch.setenv("CUOBJDUMP", str(tmp_path / "nothing"))
    assert cuobjdump.find() is None
    with pytest.raises(RuntimeFailure, match="pip install nvidia-cuda-cuobjdump"):
        cuobjdump.list_archs(tmp_path / "lib.so")


@needs_cuobjdump
@pytest.mark.parametrize("name, sass, ptx", [
    ("libsass.so", {"sm_75", "sm_80", "sm_90"}, set()),
    ("libptx.so", set(), {"compute_80"}),
    ("libboth.so", {"sm_80"}, {"compute_90"}),
    ("libnone.so", set(), set()),
])
def test_real_run_on_the_fixtures(name, sass, ptx):
    assert cuobjdump.list_archs(FIXTURES / name) == (sass, ptx)


@needs_cuobjdump
@pytest.mark.parametrize("content", [b"not a binary\n", None], ids=["not-elf", "missing"])
def test_a_file_cuobjdump_cannot_read_is_one_line_naming_it(tmp_path, content):
    path = tmp_path / "broken.so"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(RuntimeFailure) as failure:
        cuobjdump.list_archs(path)
    message = str(failure.value)
    assert "\n" not in message and str(path) in message and message.startswith("cuobjdump cannot read")


def test_finds_the_wheels_binary_when_not_on_path(monkeypatch):
    if cuobjdump.find() is None:
        pytest.skip(f"cuobjdump is not installed ({cuobjdump.INSTALL_HINT})")
    monkeypatch.delenv("CUOBJDUMP", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("CUDA_HOME", "/nonexistent")
    monkeypatch.delenv("CUDA_PATH", raising=False)
    found = cuobjdump.find()
    if found is None or not os.access(found, os.X_OK):
        pytest.skip("no nvidia-cuda-cuobjdump wheel in this Python (cuobjdump comes from a toolkit)")
    assert found.endswith("/bin/cuobjdump")
