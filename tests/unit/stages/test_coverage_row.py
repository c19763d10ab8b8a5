"""stages/coverage_row: a row's verdict per GPU from its libraries' device code, the baseline and its check (a lost
architecture fails), the driver a row's lock needs; stages/coverage_image's pure parts (ELF, fatbin headers, tars)."""

from __future__ import annotations

import dataclasses
import io
import struct
import tarfile

import pytest

from imagematrix.knowledge import coverage as rules_mod
from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.model.matrix import load as load_matrix
from imagematrix.stages import coverage_image, coverage_row
from imagematrix.stages.coverage_image import FileCoverage, ImageScan, LayerScan
from tests.conftest import ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "cuda"
SP = "/opt/venv/lib/python3.11/site-packages"
ROW = load_matrix(ROOT / "matrix.yaml").rows[0]
N, J, X, U = coverage_row.NATIVE, coverage_row.PTX_JIT, coverage_row.NONE, coverage_row.NOT_USED


def f(sass=(), ptx=(), kind="so"):
    return FileCoverage("0" * 64, 1, kind, tuple(sass), tuple(ptx))


CU124 = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]
IMAGE = {  # a cu124 row as scanned (verl 0.3 + vLLM 0.7.2, abridged)
    f"{SP}/torch/lib/libtorch_cuda.so": f(CU124 + ["sm_90a"]),
    f"{SP}/vllm/_C.abi3.so": f(["sm_70", "sm_75", "sm_80", "sm_86", "sm_89", "sm_90"], ["compute_52"]),
    f"{SP}/vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so": f(["sm_80", "sm_90"]),
    f"{SP}/nvidia/cublas/lib/libcublas.so.12": f(CU124),
    f"{SP}/nvidia/nccl/lib/libnccl.so.2": f(["sm_50", "sm_60", "sm_61", "sm_70", "sm_80", "sm_90"]),
    f"{SP}/xformers/_C.so": f(["sm_60", "sm_70", "sm_75", "sm_80", "sm_90a"], ["compute_60", "compute_80"]),
    f"{SP}/flashinfer_cubin/cubins/a/fmhaSm100a.cubin": f(["sm_100a"], kind="cubin"),
    f"{SP}/flashinfer_cubin/cubins/a/fmhaSm90.cubin": f(["sm_90"], kind="cubin"),
    "/usr/lib/x86_64-linux-gnu/libsomething.so": f(["sm_80"]),
}


def test_files_go_to_the_first_library_that_names_them():
    libs = coverage_row.group(IMAGE)
    assert set(libs) == {"torch", "vllm", "vllm-flash-attn", "cublas", "nccl", "xformers", "flashinfer-cubin", "other"}
    assert libs["flashinfer-cubin"].files == {"*": (("sm_100a", "sm_90"), ())} and libs["flashinfer-cubin"].count == 2


BAD = ("cublas", "nccl", "torch", "vllm-flash-attn")


@pytest.mark.parametrize(("gpu", "verdict", "lacking", "optional"), [
    ((6, 0), J, (), ("flashinfer-cubin", "other")),  # P100: vLLM's _C only as compute_52 PTX; flash-attn not used
    ((7, 0), N, (), ("flashinfer-cubin", "other")),  # V100: flash-attn kernels not used below 8.0
    ((7, 5), N, (), ("flashinfer-cubin", "other")),  # T4: NCCL's sm_70 code runs on 7.5
    ((8, 0), N, (), ("flashinfer-cubin",)),
    ((8, 9), N, (), ("flashinfer-cubin",)),  # sm_80 code on 8.9; vLLM has sm_89 itself
    ((9, 0), N, (), ("other",)),  # sm_80 code does not run on 9.0
    ((10, 0), X, BAD, ("other",)),  # B200: vLLM only through PTX, the others have nothing
    ((12, 0), X, BAD, ("flashinfer-cubin", "other")),  # sm_100a runs on 10.0 only
])
def test_verdict_table_of_a_cu124_row(gpu, verdict, lacking, optional):
    judged = coverage_row.gpu_verdict(coverage_row.group(IMAGE), gpu)
    assert (judged.verdict, judged.lacking, judged.optional_lacking) == (verdict, lacking, optional)


def test_ptx_only_is_jit_and_names_the_library():
    libs = coverage_row.group({f"{SP}/torch/lib/libtorch_cuda.so": f(["sm_80"], ["compute_90"])})
    judged = coverage_row.gpu_verdict(libs, (10, 0))
    assert (judged.verdict, judged.jit) == (J, ("torch",))
    assert "PTX JIT (torch)" in judged.summary()


def test_every_file_of_an_all_library_must_have_the_kernel():
    libs = coverage_row.group({f"{SP}/torch/lib/a.so": f(["sm_90"]), f"{SP}/torch/lib/b.so": f(["sm_80"])})
    found = coverage_row.library_verdict(libs["torch"], (9, 0), rules_mod.rules().library("torch"))
    assert found.verdict == X and found.lacking == (f"{SP}/torch/lib/b.so",)


def test_a_library_used_from_8_0_is_not_used_below():
    lib = coverage_row.group(IMAGE)["vllm-flash-attn"]
    assert coverage_row.library_verdict(lib, (7, 5), rules_mod.rules().library("vllm-flash-attn")).verdict == U


def test_table_columns_leave_out_arm64_only_capabilities():
    caps = [cap for cap, _ in coverage_row.capabilities()]
    assert (10, 0) in caps and (12, 0) in caps and (8, 7) not in caps and (12, 1) not in caps


def scan_of(files):
    return ImageScan("127.0.0.1:5000/imagematrix/verl:x", files, {}, 3, 0, 1.0)


def test_baseline_round_trip_and_a_lost_architecture_fails():
    old = coverage_row.make_baseline(ROW, scan_of(IMAGE))
    again = coverage_row.from_json(coverage_row.to_json(old), "coverage/x.json")
    assert again.verdicts == old.verdicts and again.libraries == old.libraries
    assert coverage_row.check(again, old).action == "pass"
    lost = dict(IMAGE, **{f"{SP}/torch/lib/libtorch_cuda.so": f(["sm_80", "sm_86", "sm_90"])})  # sm_70, sm_75 gone
    result = coverage_row.check(old, coverage_row.make_baseline(ROW, scan_of(lost)))
    assert result.action == "fail"
    assert "torch on sm_70: native -> none" in result.message and "torch on sm_75: native -> none" in result.message
    assert "--record" in result.message
    assert coverage_row.check(old, coverage_row.make_baseline(ROW, scan_of(lost)), record=True).action == "record"
    assert coverage_row.check(None, old).action == "record"


@pytest.mark.parametrize(("native", "jit", "expected"), [
    (("V100", "A100", "H100", "sm_89"), (), []),
    ((), ("P100",), []),  # vLLM's _C only as compute_52 PTX: accepted under gpus_jit
    (("P100",), (), ["P100 (sm_60, row key gpus): no sm_60 machine code in vllm, only PTX"]),
    (("H100", "B200"), (), ["B200 (sm_100, row key gpus): no sm_100 kernel (SASS or PTX) in cublas, nccl, torch, "
                            "vllm-flash-attn"]),
    ((), ("RTX 5090",), ["RTX 5090 (sm_120, row key gpus_jit): no sm_120 kernel (SASS or PTX) in cublas"]),
    (("Jetson AGX Orin",), (), ["Jetson AGX Orin (sm_87, row key gpus): not judged"]),
])
def test_declared_gpus_name_the_gpu_its_arch_and_the_libraries_without_a_kernel(native, jit, expected):
    baseline = coverage_row.make_baseline(ROW, scan_of(IMAGE))
    found = coverage_row.declared(dataclasses.replace(ROW, gpus=native, gpus_jit=jit), baseline)
    assert len(found) == len(expected) and all(line.startswith(e) for line, e in zip(found, expected, strict=True))


def test_a_library_that_disappears_fails_and_an_optional_loss_only_warns():
    old = coverage_row.make_baseline(ROW, scan_of(IMAGE))
    gone = {k: v for k, v in IMAGE.items() if "nccl" not in k}
    assert "nccl on sm_80: native -> absent" in coverage_row.check(old, coverage_row.make_baseline(ROW, scan_of(gone))).message
    fewer = {k: v for k, v in IMAGE.items() if "fmhaSm100a" not in k}
    result = coverage_row.check(old, coverage_row.make_baseline(ROW, scan_of(fewer)))
    assert result.action == "pass" and "flashinfer-cubin on sm_100: native -> none (not deciding)" in result.message


@pytest.mark.parametrize("text", ["{}", "[]", '{"format": 1, "row": "r", "image": "i", "verdicts": {}, "libraries": '
                                              '{"torch": {"files": {"a": {"sass": ["sm_8x"], "ptx": []}}, "count": 1}}}',
                                  "not json"])
def test_a_malformed_baseline_is_bad_input(text):
    with pytest.raises(InputError, match="not a coverage baseline"):
        coverage_row.from_json(text, "coverage/x.json")


LOCK = """nvidia-cuda-runtime==13.0.96 \\
    --hash=sha256:00
nvidia-nvjitlink==13.5.37 \\
    --hash=sha256:00
torch==2.13.0 \\
    --hash=sha256:00
"""


def test_the_driver_comes_from_the_cuda_wheels_of_the_lock():
    need = coverage_row.driver_need(ROW, LOCK)
    assert (need.runtime, need.libraries, need.minimum, need.full) == ("13.0", "13.5", "580.65.06", None)
    assert coverage_row.driver_status("575.51.03", need.to_json()) == "too-old"
    assert coverage_row.driver_status("580.95.05", need.to_json()) == "ok"  # full support unknown: the minimum
    old = coverage_row.driver_need(ROW, "nvidia-cuda-runtime-cu12==12.4.127 \\\n    --hash=sha256:00\n")
    assert (old.minimum, old.full) == ("525.60.13", "550.54.14")
    assert coverage_row.driver_status("535.104.05", old.to_json()) == "compat"
    assert coverage_row.driver_need(ROW, "").runtime == ROW.cuda


def test_forward_compatibility_is_named_for_data_centre_gpus_only():
    need = {"runtime_cuda": "13.0"}
    assert "cuda-compat-13-0" in coverage_row.forward_compat_line("NVIDIA A100-SXM4-80GB", need)
    assert coverage_row.forward_compat_line("RTX 4090", need) == ""


# --- stages/coverage_image: ELF, fatbin headers, a layer tar --------------------------------------------------

EXPECTED = {"libsass.so": ({"sm_75", "sm_80", "sm_90"}, set()), "libptx.so": (set(), {"compute_80"}),
            "libboth.so": ({"sm_80"}, {"compute_90"})}


@pytest.mark.parametrize("name", EXPECTED)
def test_fatbin_headers_read_what_cuobjdump_lists(name):
    sass, ptx = coverage_image.fatbin_archs(FIXTURES / name)
    assert (set(sass), set(ptx)) == EXPECTED[name]


def test_elf_kind_and_section_check():
    assert coverage_image.elf_kind((FIXTURES / "libsass.so").read_bytes()[:64]) == "so"
    assert coverage_image.elf_kind(b"\x7fELF" + b"\0" * 60) is None  # not 64-bit little-endian
    assert coverage_image.elf_kind(b"PK\x03\x04" + b"\0" * 60) is None
    cubin = bytearray((FIXTURES / "libnone.so").read_bytes()[:64])
    cubin[18:20] = struct.pack("<H", 190)
    assert coverage_image.elf_kind(bytes(cubin)) == "cubin"
    assert coverage_image.has_fatbin(FIXTURES / "libsass.so", (FIXTURES / "libsass.so").stat().st_size) is True
    assert coverage_image.has_fatbin(FIXTURES / "libnone.so", (FIXTURES / "libnone.so").stat().st_size) is False


@pytest.mark.parametrize("damage", ["truncated", "huge-table", "garbage-fatbin"])
def test_a_crafted_elf_is_refused_not_crashed_on(tmp_path, damage):
    data = bytearray((FIXTURES / "libsass.so").read_bytes())
    if damage == "truncated":
        data = data[:200]
    elif damage == "huge-table":
        data[58:64] = struct.pack("<HHH", 64, 65535, 1)  # 65535 sections of 64 bytes: past the file's end
    else:
        at = data.find(b"\x50\xed\x55\xba")
        data[at + 16:at + 64] = b"\xff" * 48  # an entry whose header size and architecture are nonsense
    path = tmp_path / "crafted.so"
    path.write_bytes(bytes(data))
    assert coverage_image.has_fatbin(path, len(data)) in (None, True)
    with pytest.raises(RuntimeFailure):
        coverage_image.fatbin_archs(path)


def layer_tar(members: dict[str, bytes]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def test_merge_applies_whiteouts_and_opaque_folders():
    a = LayerScan(elf={"/x/a.so": f(["sm_80"]), "/x/b.so": f(["sm_80"]), "/y/c.so": f(["sm_90"]), "/z/n.so": None})
    b = LayerScan(elf={"/z/n.so": f(["sm_75"])}, whiteouts=["/x/a.so"], opaque=["/y"])
    files, unread = coverage_image.merge([a, b])
    assert sorted(files) == ["/x/b.so", "/z/n.so"] and files["/z/n.so"].sass == ("sm_75",) and unread == {}


def test_a_layer_tar_is_scanned_without_unpacking(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGEMATRIX_CACHE", str(tmp_path / "cache"))
    calls = []
    monkeypatch.setattr(coverage_image.coverage.cuobjdump, "list_archs",
                        lambda path, **kw: calls.append(path) or coverage_image.fatbin_archs(path))
    stream = layer_tar({"opt/venv/lib/libsass.so": (FIXTURES / "libsass.so").read_bytes(),
                        "opt/venv/lib/libnone.so": (FIXTURES / "libnone.so").read_bytes(),
                        "opt/venv/lib/README": b"not an ELF" * 10, "opt/venv/lib/.wh.old.so": b""})
    scratch = tmp_path / "s"
    scratch.mkdir()
    found = coverage_image.scan_tar(stream, scratch, "layer 0")
    assert found.elf["/opt/venv/lib/libsass.so"].sass == ("sm_75", "sm_80", "sm_90")
    assert found.elf["/opt/venv/lib/libnone.so"] is None and "/opt/venv/lib/README" not in found.elf
    assert found.whiteouts == ["/opt/venv/lib/old.so"] and len(calls) == 1  # only the file with a fatbin
    assert list(scratch.iterdir()) == []  # the spooled member is gone
    with pytest.raises(RuntimeFailure, match="not a readable layer tar"):
        coverage_image.scan_tar(io.BytesIO(b"\x00garbage" * 100), scratch, "layer 1")


def cubin_head(abi: int, flags: int) -> bytes:
    head = bytearray((FIXTURES / "libnone.so").read_bytes()[:64])
    head[8] = abi
    head[18:20] = struct.pack("<H", 190)
    head[48:52] = struct.pack("<I", flags)
    return bytes(head)


@pytest.mark.parametrize(("abi", "flags", "expected"), [
    (8, 0x6402, "sm_100"), (8, 0x6404, "sm_100"), (8, 0x640C, "sm_100a"), (8, 0x670A, "sm_103a"),  # as cuobjdump says
    (8, 0x6410, None),  # a bit never seen (a family cubin?): cuobjdump decides
    (7, 0x5A, None),  # the older ABI: cuobjdump decides
    (8, 0x0002, None),  # no architecture
])
def test_a_cubins_architecture_from_its_header_only_in_the_checked_form(abi, flags, expected):
    found = coverage_image.cubin_archs(cubin_head(abi, flags))
    assert found == (None if expected is None else (frozenset({expected}), frozenset()))


def test_a_huge_baseline_file_is_refused_unread(tmp_path):
    path = coverage_row.baseline_path(tmp_path, ROW.id)
    path.parent.mkdir()
    path.write_text(" " * 2_000_000)
    with pytest.raises(InputError):
        coverage_row.load(path)
