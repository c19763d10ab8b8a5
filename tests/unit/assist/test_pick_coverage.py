"""`pick --gpu` and `--driver` answer from a row's verdict read from its binaries (coverage/<row-id>.json) where the
row was scanned, from torch's architecture list where it was not."""

from __future__ import annotations

import shutil

import pytest

from imagematrix.assist import pick
from imagematrix.model import matrix as matrix_mod
from imagematrix.stages import coverage_row, publish
from imagematrix.stages.coverage_image import FileCoverage, ImageScan
from tests.conftest import ROOT

SP = "/opt/venv/lib/python3.11/site-packages"
OLD = "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311"
NEW = "verl0.9.1-vllm0.31.0-torch2.13.0-cu130-py311"


def f(sass=(), ptx=()):
    return FileCoverage("0" * 64, 1, "so", tuple(sass), tuple(ptx))


@pytest.fixture(autouse=True)
def nothing_published(monkeypatch):
    monkeypatch.setattr(publish, "remote_labels", lambda registry, tag: None)


@pytest.fixture
def scanned(tmp_path):
    """A copy of the matrix with two rows scanned: the cu124 row as its binaries say (torch sm_50..sm_90, vLLM's
    _C with compute_52 PTX), the cu130 row with torch sm_75..sm_120 and a cuBLAS that lost sm_120."""
    shutil.copy(ROOT / "matrix.yaml", tmp_path / "matrix.yaml")
    m = matrix_mod.load(tmp_path / "matrix.yaml")
    rows = {r.id: r for r in m.rows}
    old = {f"{SP}/torch/lib/libtorch_cuda.so": f(["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]),
           f"{SP}/vllm/_C.abi3.so": f(["sm_70", "sm_75", "sm_80", "sm_86", "sm_89", "sm_90"], ["compute_52"]),
           f"{SP}/nvidia/cublas/lib/libcublas.so.12": f(["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_90"])}
    new = {f"{SP}/torch/lib/libtorch_cuda.so": f(["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]),
           f"{SP}/vllm/_C.abi3.so": f(["sm_75", "sm_80", "sm_90", "sm_100", "sm_120"]),
           f"{SP}/nvidia/cu13/lib/libcublas.so.13": f(["sm_75", "sm_80", "sm_90", "sm_100"], ["compute_100"])}
    lock = "nvidia-cuda-runtime==13.0.96 \\\n    --hash=sha256:00\n"
    for row_id, files, text in ((OLD, old, ""), (NEW, new, lock)):
        scan = ImageScan("r", files, {}, 1, 0, 0.1)
        coverage_row.write(coverage_row.baseline_path(tmp_path, row_id),
                           coverage_row.make_baseline(rows[row_id], scan, lock_text=text))
    return m


def test_b200_excludes_a_scanned_row_naming_the_libraries(scanned):
    result = pick.pick(scanned, "B200", vllm="0.7.2")
    assert result.best is None
    reason = result.excluded[OLD][0]
    assert "no kernel for sm_100 in cublas, torch" in reason and f"coverage/{OLD}.json" in reason


def test_rtx_5090_runs_a_library_with_only_ptx_through_jit(scanned):
    result = pick.pick(scanned, "RTX 5090", vllm="0.31.0")
    chosen = next(c for c in result.candidates if c.row.id == NEW)
    assert any("sm_120 runs cublas only through PTX JIT" in n for n in chosen.notes)


@pytest.mark.parametrize("gpu", ["V100", "T4"])
def test_old_gpus_from_the_verdict(scanned, gpu):
    result = pick.pick(scanned, gpu, vllm="0.7.2")
    assert result.best.row.id == OLD  # native: torch, vLLM and cuBLAS have sm_70 code (sm_75 on T4)
    newer = pick.pick(scanned, gpu, vllm="0.31.0")
    if gpu == "V100":
        assert "no kernel for sm_70 in cublas, torch, vllm" in newer.excluded[NEW][0]
    else:
        assert newer.best.row.id == NEW
        assert any("no bf16" in n for n in newer.best.notes)  # the GPU's own notes stay


def test_the_driver_comes_from_the_scanned_libraries(scanned):
    result = pick.pick(scanned, "A100", driver="570.124.06", vllm="0.31.0")
    reason = " ".join(result.excluded[NEW])
    assert "CUDA 13.0 runtime needs driver >= 580.65.06" in reason and "cuda-compat-13-0" in reason
    consumer = pick.pick(scanned, "RTX 4090", driver="570.124.06", vllm="0.31.0")
    assert "cuda-compat" not in " ".join(consumer.excluded[NEW])


def test_an_unscanned_row_still_answers_from_torchs_list(scanned):
    result = pick.pick(scanned, "B200", vllm="0.11.0")
    assert result.best is not None and result.best.row.vllm == "0.11.0"
