"""The tests of tests/unit/suites/test_gpusmoke.py that start a process, serve HTTP or kill:
the process tier. The pure ones stay there."""

from __future__ import annotations

import subprocess
import sys

import pytest

from imagematrix.stages import smoke_gpu
from tests.conftest import ROOT
from tests.unit.suites.test_gpusmoke import GPU_DIR, ROW_072, ROW_FA, _row_json, gs


def test_helper_processes_report_their_output_and_timeouts():
    ran = gs.finish(gs.start(["-c", "print('RESULT {\"ok\": true}'); raise SystemExit(3)"]), timeout=60)
    assert ran.returncode == 3 and ran.results == [{"ok": True}]
    assert "(exit 3)" in ran.explain("x") and "torch" in ran.explain("x")  # versions are printed on failure
    slow = gs.finish(gs.start(["-c", "import time; time.sleep(30)"]), timeout=0.5)
    assert slow.returncode != 0 and "[killed after" in slow.output


def _pytest(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", str(GPU_DIR), "-p", "no:cacheprovider", "-q", "-rs", *args],
                          cwd=ROOT, capture_output=True, text=True)


def test_suite_skips_without_a_mode_and_rejects_bad_options():
    plain = _pytest()
    assert plain.returncode == 0, plain.stdout[-3000:]
    assert "passed" not in plain.stdout and "error" not in plain.stdout.lower()
    assert plain.stdout.count("run only with --host") >= 5, plain.stdout[-3000:]
    both = _pytest("--host", "--in-image", "--row-json", str(_row_json(ROW_072)))
    assert both.returncode == 4 and "exclude each other" in both.stderr
    no_row = _pytest("--in-image")
    assert no_row.returncode == 4 and "--in-image needs --row-json" in no_row.stderr


def test_suite_skips_in_host_mode_without_torch_or_gpu():
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and torch.cuda.is_available():
        pytest.skip("a GPU is visible here: the suite would run for real")
    host = _pytest("--host", "-m", "gpu or multi_gpu")
    assert host.returncode == 0, host.stdout[-3000:]
    assert "passed" not in host.stdout and "failed" not in host.stdout and "skipped" in host.stdout
    assert ("torch is not importable" in host.stdout) or ("sees no CUDA device" in host.stdout), host.stdout[-3000:]


def test_docker_command_bootstrap_runs_pytest_from_the_appended_folder(tmp_path):
    """The -c program of the docker line, run here with a Python that has no pytest on its path."""
    fake = tmp_path / "pytest_dir" / "pytest"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("import sys\ndef main(args):\n    print('ARGS', args, sys.path[-1])\n    return 7\n")
    cmd = smoke_gpu.docker_command("docker", "img", _row_json(ROW_072), tmp_path)
    program = cmd[cmd.index("img") + 2].replace("/imagematrix/pytest", str(tmp_path / "pytest_dir"))
    proc = subprocess.run([sys.executable, "-S", "-c", program, "/imagematrix/gpu", "--in-image"],
                          capture_output=True, text=True)
    assert proc.returncode == 7, proc.stderr
    assert f"ARGS ['/imagematrix/gpu', '--in-image'] {tmp_path / 'pytest_dir'}" in proc.stdout

def test_suite_alone_reads_the_row_from_the_matrix_in_host_mode():
    """The suite declares --row and --matrix itself (no conftest above it: it ships alone in the package), so
    `--host --row ID` reads the row's rendered row.json beside the matrix, and an unknown row is a usage error."""
    host = _pytest("--host", "--row", ROW_FA, "--matrix", str(ROOT / "matrix.yaml"), "-m", "gpu or multi_gpu")
    assert host.returncode == 0 and "error" not in host.stdout.lower(), host.stdout[-3000:] + host.stderr[-2000:]
    unknown = _pytest("--host", "--row", "no-such-row", "--matrix", str(ROOT / "matrix.yaml"))
    assert unknown.returncode == 4 and "no row expectations" in unknown.stderr

# --- image mode plumbing (imagematrix/stages/smoke_gpu.py) ----------------------------------------------------------------

def test_docker_command_mounts_tests_pytest_and_expectations_read_only(tmp_path):
    cmd = smoke_gpu.docker_command("docker", "reg/verl:tag", _row_json(ROW_072), tmp_path, extra=["-k", "cuda"])
    assert cmd[:4] == ["docker", "run", "--rm", "--gpus"] and cmd[4] == "all"
    image_at = cmd.index("reg/verl:tag")
    mounts = [cmd[i + 1] for i, a in enumerate(cmd[:image_at]) if a == "-v"]
    assert mounts == [f"{GPU_DIR}:/imagematrix/gpu:ro", f"{tmp_path}:/imagematrix/pytest:ro",
                      f"{_row_json(ROW_072)}:/imagematrix/row.json:ro"]
    assert cmd[image_at - 2:image_at] == ["--entrypoint", "/opt/venv/bin/python"]
    inner = cmd[image_at + 1:]
    assert inner[0] == "-c" and "sys.path.append('/imagematrix/pytest')" in inner[1]  # after the image's packages
    assert inner[2] == "/imagematrix/gpu" and inner[-2:] == ["-k", "cuda"]
    assert "--in-image" in inner and inner[inner.index("--row-json") + 1] == "/imagematrix/row.json"
    assert inner[inner.index("--confcutdir") + 1] == "/imagematrix/gpu"  # no repo conftest (imagematrix) inside
    assert "--shm-size" in cmd[:image_at]
