"""Issue 28, item 3: a flash-attn wheel compiled for a row is read (cuobjdump, on the build machine) before it is
cached, packaged or pushed: machine code for every architecture it was compiled for, else the row fails naming the
file and the architecture. `flash-attn import` holds a wheel compiled elsewhere to the same. The ELF fixtures are
real fatbin entries (tests/fixtures/cuda/make_fixtures.py): libsass.so sm_75 sm_80 sm_90, libboth.so sm_80 + PTX
compute_90, libnone.so no device code."""

from __future__ import annotations

import zipfile

import pytest

from imagematrix.knowledge.flash_attn import wheel_spec
from imagematrix.model import matrix as matrix_mod
from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.stages import coverage, flash_attn, flash_attn_store
from imagematrix.tools import cuobjdump
from tests.conftest import ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "cuda"
ROW = next(r for r in matrix_mod.load(ROOT / "matrix.yaml").rows if r.flash_attn == "2.8.3")  # key ...-sm90
SO = "flash_attn_2_cuda.cpython-312-x86_64-linux-gnu.so"

pytestmark = pytest.mark.skipif(cuobjdump.find() is None, reason="cuobjdump is not installed (pip install nvidia-cuda-cuobjdump)")


def wheel(path, *fixtures: str):
    """A wheel holding the fixtures as its CUDA extension(s), beside a pure-Python module and its dist-info."""
    with zipfile.ZipFile(path, "w") as archive:
        for index, name in enumerate(fixtures):
            archive.writestr(SO if index == 0 else f"flash_attn/ext{index}.so", (FIXTURES / name).read_bytes())
        archive.writestr("flash_attn/__init__.py", "")
        archive.writestr("flash_attn-2.8.3.dist-info/WHEEL", "Wheel-Version: 1.0\n")
    return path


def test_a_wheel_with_machine_code_for_its_archs_passes(tmp_path):
    good = wheel(tmp_path / "a.whl", "libsass.so", "libnone.so")
    assert coverage.read_wheel(good) == {SO: (frozenset({"sm_75", "sm_80", "sm_90"}), frozenset())}
    assert coverage.wheel_lacks(good, ("8.0", "9.0")) == []


def test_a_missing_arch_is_named_with_the_file_and_ptx_alone_is_not_enough(tmp_path):
    both = wheel(tmp_path / "b.whl", "libboth.so")
    assert coverage.wheel_lacks(both, ("8.0", "9.0")) == [
        f"{SO}: no sm_90 machine code, though compiled for it (it has sm_80; PTX compute_90)"]
    assert coverage.wheel_lacks(wheel(tmp_path / "n.whl", "libnone.so"), ("9.0",)) == [
        "n.whl holds no shared object with device code (a CUDA extension was expected)"]
    (tmp_path / "x.whl").write_bytes(b"<html>not a wheel</html>")
    with pytest.raises(RuntimeFailure, match="cannot read the wheel"):
        coverage.wheel_lacks(tmp_path / "x.whl", ("9.0",))


@pytest.fixture
def compile_path(monkeypatch, tmp_path):
    """ensure() with every source but the compile empty, the compile handing back `made["wheel"]`."""
    made, packaged = {}, []
    monkeypatch.setattr(flash_attn.paths, "cache_dir", lambda: tmp_path / "cache")
    monkeypatch.setattr(flash_attn, "from_mirror", lambda *a: (None, "no mirror"))
    monkeypatch.setattr(flash_attn, "from_indexes", lambda *a: (None, "no index"))
    monkeypatch.setattr(flash_attn, "from_registry", lambda *a: (None, "no registry"))
    monkeypatch.setattr(flash_attn, "compile_wheel", lambda *a, **k: (made["wheel"], {}))
    monkeypatch.setattr(flash_attn, "package", lambda w, sha, origin, ref, log: packaged.append(w) or
                        flash_attn.Wheel(ref, w.name, sha, origin, file=w))
    return made, packaged


def _ensure(tmp_path, said):
    return flash_attn.ensure(ROW, context=tmp_path, registry=None, mirror=None, indexes=[], secrets_files={},
                             log_dir=tmp_path, log=said.append, push=False)


def test_a_compiled_wheel_without_its_arch_is_not_cached_nor_packaged(compile_path, tmp_path):
    made, packaged = compile_path
    compiled = tmp_path / "compiled"
    compiled.mkdir()
    made["wheel"] = wheel(compiled / wheel_spec(ROW).filename, "libboth.so")
    with pytest.raises(RuntimeFailure) as failed:
        _ensure(tmp_path, [])
    assert f"row {ROW.id}, stage flash-attn" in str(failed.value) and f"{SO}: no sm_90 machine code" in str(failed.value)
    assert not packaged and not made["wheel"].exists()
    made["wheel"] = wheel(compiled / wheel_spec(ROW).filename, "libsass.so")
    said = []
    assert _ensure(tmp_path, said).file == made["wheel"] and packaged == [made["wheel"]]
    assert "flash-attn: the compiled wheel has machine code for sm_90" in said


def test_an_imported_wheel_without_the_keys_arch_is_bad_input(tmp_path):
    spec = wheel_spec(ROW)
    lacking = wheel(tmp_path / spec.filename, "libboth.so")
    with pytest.raises(InputError, match="lacks architectures of the row's key .sm_90.*no sm_90 machine code"):
        flash_attn_store.checked_import(spec, lacking, None)
    good = wheel(tmp_path / spec.filename, "libsass.so")
    assert flash_attn_store.checked_import(spec, good, None)[1] == f"imported from {spec.filename}"
