"""GPU / CUDA knowledge (knowledge/gpus.yaml): capabilities, arch coverage, drivers, torch arch lists."""

from __future__ import annotations

import pytest

from imagematrix.knowledge import flash_attn, gpus
from imagematrix.model import matrix
from imagematrix.model.errors import InputError
from tests.conftest import ROOT


@pytest.mark.parametrize(("name", "cap"), [
    ("V100", (7, 0)), ("Tesla V100-SXM2-32GB", (7, 0)),
    ("T4", (7, 5)), ("Tesla T4", (7, 5)), ("rtx 2080 ti", (7, 5)), ("RTX 20xx", (7, 5)), ("Quadro RTX 6000", (7, 5)),
    ("A100", (8, 0)), ("NVIDIA A100-SXM4-80GB", (8, 0)), ("a800", (8, 0)),
    ("A10", (8, 6)), ("A10G", (8, 6)), ("NVIDIA A10G", (8, 6)), ("NVIDIA GeForce RTX 3090", (8, 6)),
    ("RTX A6000", (8, 6)), ("RTX 30xx", (8, 6)),
    ("L4", (8, 9)), ("L40", (8, 9)), ("L40S", (8, 9)), ("NVIDIA GeForce RTX 4090", (8, 9)), ("RTX 40XX", (8, 9)),
    ("NVIDIA RTX 6000 Ada Generation", (8, 9)),
    ("H100", (9, 0)), ("NVIDIA H100 80GB HBM3", (9, 0)), ("H200", (9, 0)), ("H20", (9, 0)), ("H800", (9, 0)),
    ("NVIDIA GH200 480GB", (9, 0)),
    ("B200", (10, 0)), ("GB200", (10, 0)), ("B300", (10, 3)),
    ("NVIDIA GeForce RTX 5090", (12, 0)), ("RTX 50xx", (12, 0)), ("NVIDIA RTX PRO 6000 Blackwell Server Edition", (12, 0)),
    ("GB10", (12, 1)),
    ("sm_75", (7, 5)), ("sm75", (7, 5)), ("SM_80", (8, 0)), ("sm_90a", (9, 0)), ("sm_100", (10, 0)),
    ("sm_120", (12, 0)), ("compute_86", (8, 6)), ("7.5", (7, 5)), ("12.0", (12, 0)),
])
def test_capability(name, cap):
    assert gpus.capability(name) == cap


def test_similar_names_do_not_collide():
    # whole-word matching: A10 is not A100, H20 is not H200, L40 is not L40S, T4 is not a Jetson T4000
    assert {gpus.capability(n) for n in ("A10", "A100")} == {(8, 6), (8, 0)}
    assert gpus.capability("Jetson T4000") == (11, 0)


def test_unknown_gpu_is_an_input_error_with_examples():
    with pytest.raises(InputError) as info:
        gpus.capability("Radeon 7900")
    assert "unknown GPU" in info.value.message and "sm_80" in info.value.fix


def test_ambiguous_gpu_name_is_an_input_error(monkeypatch):
    data = gpus.data()
    extra = ((("X1",), (8, 0), "X1"), (("X1",), (9, 0), "X1"))
    monkeypatch.setattr(gpus, "data", lambda: gpus.Data(names=data.names + extra, drivers=data.drivers,
                                                        torch_archs=data.torch_archs))
    with pytest.raises(InputError, match="ambiguous"):
        gpus.capability("NVIDIA X1")


@pytest.mark.parametrize(("archs", "cap", "how"), [
    (["sm_80", "sm_90"], (9, 0), "sm_90 (exact)"),
    (["sm_80", "sm_90"], (8, 6), "sm_80 (same major, binary compatible)"),
    (["sm_80", "sm_86"], (8, 9), "sm_86 (same major, binary compatible)"),
    (["sm_80", "sm_90"], (10, 0), None),               # machine code does not cross majors
    (["sm_80", "compute_90"], (10, 0), "compute_90 (PTX, JIT-compiled by the driver)"),
    (["sm_80", "compute_90"], (8, 6), "sm_80 (same major, binary compatible)"),
    (["compute_90"], (8, 9), None),                     # PTX only JITs upwards
    (["sm_90a"], (9, 0), "sm_90a (exact)"),
    (["sm_90a"], (9, 1), None),                         # arch-specific code runs on that exact capability only
    (["sm_100f"], (10, 3), "sm_100f (same major, binary compatible)"),
    (["sm_75"], (7, 0), None),                          # never downwards
    ([], (8, 0), None),
])
def test_coverage(archs, cap, how):
    assert gpus.coverage(archs, cap) == how
    assert gpus.covers(archs, cap) is (how is not None)


def test_bf16_and_flash_attention_2_need_ampere():
    assert not gpus.bf16_supported((7, 5)) and not gpus.flash_attn2_supported(gpus.capability("T4"))
    assert gpus.bf16_supported((8, 0)) and gpus.flash_attn2_supported(gpus.capability("A100"))
    assert gpus.bf16_supported((12, 0)) and gpus.flash_attn2_supported((9, 0))


@pytest.mark.parametrize(("cuda", "toolkit", "compat"), [
    ("12.4", "550.54.14", "525.60.13"), ("12.6", "560.28.03", "525.60.13"), ("12.8", "570.26", "525.60.13"),
    ("13.0", "580.65.06", "580.65.06"), ("12.1", "530.30.02", "525.60.13"), ("12.4.127", "550.54.14", "525.60.13"),
])
def test_min_driver(cuda, toolkit, compat):
    assert gpus.min_driver(cuda) == toolkit
    assert gpus.min_driver_compat(cuda) == compat


@pytest.mark.parametrize(("driver", "cuda", "status"), [
    ("550.54.14", "12.4", "ok"), ("560.35.03", "12.4", "ok"), ("535.104.05", "12.4", "compat"),
    ("570.26", "12.8", "ok"), ("570.124.06", "12.8", "ok"), ("565.57.01", "12.8", "compat"),
    ("525.60.13", "12.6", "compat"), ("470.82.01", "12.1", "too-old"),
    ("570.195.03", "13.0", "too-old"), ("580.65.06", "13.0", "ok"),
])
def test_driver_status(driver, cuda, status):
    assert gpus.driver_status(driver, cuda) == status


def test_driver_and_cuda_errors():
    with pytest.raises(InputError, match="no driver data for CUDA 10.2"):
        gpus.min_driver("10.2")
    with pytest.raises(InputError, match="not a CUDA version"):
        gpus.min_driver("twelve")
    with pytest.raises(InputError, match="not a driver version"):
        gpus.driver_status("latest", "12.4")


def test_driver_table_is_monotonic():
    from packaging.version import Version

    rows = sorted(gpus.data().drivers.items(), key=lambda kv: Version(kv[0]))
    toolkit = [gpus.driver_version(v["toolkit"]) for _, v in rows]
    assert toolkit == sorted(toolkit)
    assert all(gpus.driver_version(v["compat"]) <= gpus.driver_version(v["toolkit"]) for _, v in rows)


@pytest.mark.parametrize(("torch", "cuda", "first", "last", "evidence"), [
    ("2.4.0", "12.1", "sm_50", "sm_90", "verified"),
    ("2.5.1", "12.4", "sm_50", "sm_90", "verified"),
    ("2.6.0", "12.4", "sm_50", "sm_90", "verified"),
    ("2.7.1", "12.6", "sm_50", "sm_90", "verified"),
    ("2.8.0", "12.8", "sm_70", "sm_120", "verified"),
    ("2.9.0", "12.8", "sm_70", "sm_120", "verified"),
    ("2.10.0", "12.8", "sm_70", "sm_120", "verified"),
    ("2.11.0", "13.0", "sm_75", "sm_120", "verified"),
    ("2.11.0", "12.6", "sm_50", "sm_90", "reported"),
])
def test_torch_arch_lists(torch, cuda, first, last, evidence):
    archs = gpus.torch_arch_list(torch, cuda)
    assert archs[0] == first and archs[-1] == last
    assert not any(a.startswith("compute_") for a in archs)  # the official wheels ship no PTX
    assert gpus.torch_arch_entry(torch, cuda)["evidence"] == evidence


def test_unknown_torch_flavour_has_no_arch_list():
    assert gpus.torch_arch_list("2.5.1", "11.8") is None
    assert gpus.torch_arch_list("2.3.1", "12.1") is None


def test_what_the_real_rows_run_on():
    """Every row of the matrix has an arch list; the consequences the issue names hold for them."""
    rows = {(r.torch, r.cuda): r for r in matrix.load().rows}
    for torch, cuda in rows:
        assert gpus.torch_arch_list(torch, cuda), (torch, cuda)
    on = {key: {gpu for gpu in ("V100", "T4", "A100", "L4", "H100", "B200", "B300", "RTX 5090", "GB10")
                if gpus.covers(gpus.torch_arch_list(*key), gpus.capability(gpu))} for key in rows}
    assert on[("2.5.1", "12.4")] == {"V100", "T4", "A100", "L4", "H100"}             # no Blackwell in cu124
    assert on[("2.8.0", "12.8")] == {"V100", "T4", "A100", "L4", "H100", "B200", "B300", "RTX 5090", "GB10"}
    assert on[("2.11.0", "13.0")] == {"T4", "A100", "L4", "H100", "B200", "B300", "RTX 5090", "GB10"}  # no V100


# --- issue 13, item 6: a malformed gpus.yaml is bad input naming its file and line ---------------------------------

REAL_GPUS = (ROOT / "knowledge" / "gpus.yaml").read_text()


def _line_of(text: str, marker: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if marker in line)


@pytest.mark.parametrize(("old", "new", "marker", "message"), [
    # missing keys: a section, a driver's compat, an arch list's evidence
    ("torch_arch_lists:", "torch_arch_listz:", "capabilities:", "missing: torch_arch_lists"),
    ('"12.4": {toolkit: 550.54.14, compat: 525.60.13}', '"12.4": {toolkit: 550.54.14}', '"12.4": {toolkit',
     "missing key 'compat'"),
    ('{torch: ">=2.8,<2.11", cuda: ["12.8"], evidence: verified,', '{torch: ">=2.8,<2.11", cuda: ["12.8"],',
     '{torch: ">=2.8,<2.11"', "missing key 'evidence'"),
    # wrong types: a model list that is a string, a driver that is a list, a section that is a list, an arch list
    # entry that is a string, a torch specifier that is a number, a capability key that is no capability
    ('"9.0": [H100, H200, GH200, H800, H20]', '"9.0": H100', '"9.0": H100', "expected a list, got 'H100'"),
    ('"12.6": {toolkit: 560.28.03, compat: 525.60.13}', '"12.6": [560.28.03]', '"12.6": [560', "expected a mapping"),
    ("drivers:\n", "drivers: [x]\nold_drivers:\n", "drivers: [x]", "expected a mapping, got ['x']"),
    ('  - {torch: ">=2.13,<2.14"', '  - just a string\n  - {torch: ">=2.13,<2.14"', "just a string",
     "expected a mapping, got 'just a string'"),
    ('{torch: ">=2.11,<2.12", cuda: ["12.8"]', '{torch: 2.11, cuda: ["12.8"]', "{torch: 2.11,", "InvalidSpecifier"),
    ('"5.2": [M60', 'x: [M60', "x: [M60", "ValueError"),
])
def test_a_malformed_gpus_file_is_bad_input_at_its_line(tmp_path, old, new, marker, message):
    assert old in REAL_GPUS
    text = REAL_GPUS.replace(old, new, 1)
    path = tmp_path / "gpus.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        gpus.data(path)
    assert info.value.where == f"{path}:{_line_of(text, marker)}", info.value.render()
    assert message in info.value.message, info.value.render()
    assert info.value.fix


def test_a_malformed_gpus_file_exits_2_with_file_and_line(tmp_path, monkeypatch, run, project_copy):
    """Through the command line: render of a flash-attn row reads the architectures from gpus.yaml."""
    text = REAL_GPUS.replace('"12.4": {toolkit: 550.54.14, compat: 525.60.13}', '"12.4": {toolkit: 550.54.14}', 1)
    path = tmp_path / "gpus.yaml"
    path.write_text(text)
    monkeypatch.setattr(gpus, "GPUS", path)
    monkeypatch.setattr(gpus.data.__wrapped__, "__defaults__", (path,))  # the default bound at import
    gpus.data.cache_clear()
    flash_attn._spec.cache_clear()  # a wheel spec holds the archs read from gpus.yaml by an earlier test
    try:
        result = run("render", "--matrix", project_copy, "--row", "verl0.4.1-vllm0.8.5-torch2.6.0-cu124-py311-fa2.7.4.post1")
    finally:
        gpus.data.cache_clear()
        flash_attn._spec.cache_clear()
    assert result.code == 2, result
    line = _line_of(text, '"12.4": {toolkit')
    assert f"error: {path}:{line}: malformed GPU data: missing key 'compat'" in result.err, result
    assert "Traceback" not in result.err and "internal error" not in result.err
    assert not (project_copy.parent / "dockerfiles").exists()
