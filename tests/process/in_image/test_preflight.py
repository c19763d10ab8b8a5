"""The runtime preflight every image runs at start (imagematrix/in_image/preflight.py, stdlib only).

This machine has no GPU: a stand-in `nvidia-smi` on PATH reports one, as the NVIDIA container toolkit's would.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "imagematrix" / "in_image" / "preflight.py"
CU124 = "sm_50 sm_60 sm_70 sm_75 sm_80 sm_86 sm_90\n"


def run(tmp_path, smi: str | None, env: dict | None = None) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "nvidia-smi").unlink(missing_ok=True)
    if smi is not None:
        (bin_dir / "nvidia-smi").write_text(f"#!/bin/sh\n{smi}\n")
        (bin_dir / "nvidia-smi").chmod(0o755)
    archs = tmp_path / "torch-archs.txt"
    archs.write_text(CU124)
    environ = {"PATH": f"{bin_dir}:/usr/bin:/bin", "IMAGEMATRIX_TORCH_ARCHS": str(archs), **(env or {})}
    return subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=environ, timeout=30)


@pytest.mark.parametrize(("gpu", "expected"), [
    ("NVIDIA B200, 10.0", "no kernel image is available for execution on the device"),
    ("Tesla T4, 7.5", "no bfloat16 and no FlashAttention-2"),
])
def test_warns_and_never_blocks(tmp_path, gpu, expected):
    proc = run(tmp_path, f"echo '{gpu}'")
    assert proc.returncode == 0 and expected in proc.stderr and "IMAGEMATRIX_PREFLIGHT=0" in proc.stderr


def test_covered_gpu_is_silent(tmp_path):
    proc = run(tmp_path, "echo 'NVIDIA H100 80GB HBM3, 9.0'")
    assert proc.returncode == 0 and proc.stderr == ""


def test_off_switch_and_no_gpu_runtime_are_silent(tmp_path):
    assert run(tmp_path, "echo 'Tesla T4, 7.5'", {"IMAGEMATRIX_PREFLIGHT": "0"}).stderr == ""
    assert run(tmp_path, None).stderr == ""


def test_its_own_failure_is_a_warning_not_an_exit(tmp_path):
    proc = run(tmp_path, "echo 'Failed to initialize NVML: Driver/library version mismatch' >&2; exit 18")
    assert proc.returncode == 0 and "preflight: skipped" in proc.stderr and "NVML" in proc.stderr


def test_the_image_entrypoint_runs_it_then_the_command():
    text = (ROOT / "dockerfiles" / "templates" / "entrypoint.sh").read_text()
    assert "preflight.py || true" in text and text.rstrip().endswith('exec "$@"')
    assert os.access(ROOT / "dockerfiles" / "templates" / "entrypoint.sh", os.R_OK)
