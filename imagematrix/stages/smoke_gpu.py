"""GPU smoke tests inside an image: `docker run --gpus all` with imagematrix/suites/gpu and pytest mounted in.

Images carry no pytest. pytest_dir() installs pytest and its pure-Python dependencies once on this machine
(`pip install --target`, cached under ~/.cache/imagematrix) for the row's Python, and the container puts that
folder at the END of sys.path, so the image's own packages (packaging, ...) win over the ones pytest brought. What
the image must contain comes from the repository (the row's rendered row.json), mounted read-only, never from
the image.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from imagematrix.knowledge import vllm_advice
from imagematrix.model import paths
from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.model.matrix import Matrix, Row
from imagematrix.model.paths import cache_dir
from imagematrix.tools import docker, process

# pytest marker expressions of the GPU tiers (`test --gpu --gpu-tier`)
TIERS = {"single": ["-m", "gpu and not multi_gpu"], "multi": ["-m", "multi_gpu"], "all": []}
GPU_TESTS = paths.SUITES / "gpu"  # package data, mounted alone into the image
MOUNT = "/imagematrix"
IMAGE_PYTHON = "/opt/venv/bin/python"
COMPLETE = ".imagematrix-complete"
ADVICE_JSON = "vllm-advice.json"  # gpusmoke.ADVICE_JSON


def pytest_version() -> str:
    """The pytest of this machine: the image runs the same one."""
    return importlib.metadata.version("pytest")


def pytest_dir(python: str, *, cache: Path | None = None) -> Path:
    """A folder holding pytest and its dependencies for Python `python` ("3.11"), pure Python only (cached)."""
    version = pytest_version()
    target = (cache or cache_dir()) / "gpu-pytest" / f"py{python}-pytest{version}"
    if (target / COMPLETE).is_file():
        return target
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
           "--only-binary=:all:", "--python-version", python, "--target", str(tmp), f"pytest=={version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeFailure(f"cannot install pytest {version} for Python {python} ({' '.join(cmd)}):\n"
                             f"{proc.stderr.strip()[-2000:]}")
    compiled = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.suffix in (".so", ".pyd"))
    if compiled:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeFailure(f"pytest {version} for Python {python} pulled compiled files, which need not match "
                             f"the image's Python: {', '.join(compiled[:5])}")
    (tmp / COMPLETE).write_text(" ".join(cmd) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def docker_command(cli: str, image: str, row_json: Path, pytest_path: Path, *, tests: Path = GPU_TESTS,
                   shm_size: str = "16g", extra: list[str] | None = None, advice: Path | None = None) -> list[str]:
    """`docker run` line that runs the GPU suite inside `image` on every local GPU, in image mode; `advice` (the
    known vLLM failures as JSON, write_advice) is mounted beside row.json so that a failing test names the fix."""
    bootstrap = (f"import sys; sys.path.append({MOUNT + '/pytest'!r}); import pytest; "
                 "sys.exit(pytest.main(sys.argv[1:]))")
    return [
        cli, "run", "--rm", "--gpus", "all", "--shm-size", shm_size,
        "-v", f"{tests.resolve()}:{MOUNT}/gpu:ro",
        "-v", f"{pytest_path.resolve()}:{MOUNT}/pytest:ro",
        "-v", f"{row_json.resolve()}:{MOUNT}/row.json:ro",
        *(["-v", f"{advice.resolve()}:{MOUNT}/{ADVICE_JSON}:ro"] if advice else []),
        "-e", "PYTHONDONTWRITEBYTECODE=1", "-e", "HF_HUB_OFFLINE=1", "-e", "TRANSFORMERS_OFFLINE=1",
        "-w", "/tmp", "--entrypoint", IMAGE_PYTHON, image,
        "-c", bootstrap, f"{MOUNT}/gpu", "-p", "no:cacheprovider", "--rootdir", f"{MOUNT}/gpu",
        "--confcutdir", f"{MOUNT}/gpu", "-v", "-rs", "--in-image", "--row-json", f"{MOUNT}/row.json",
        *(["--vllm-advice", f"{MOUNT}/{ADVICE_JSON}"] if advice else []),
        *(extra or []),
    ]


def write_advice(path: Path) -> Path:
    """knowledge/vllm-advice.yaml as JSON at `path`, for the GPU suite inside the image (which has no imagematrix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(vllm_advice.export(), indent=1, sort_keys=True) + "\n")
    return path


def row_json(matrix: Matrix, row: Row) -> Path:
    path = matrix.root / "dockerfiles" / "generated" / row.id / "row.json"
    if not path.is_file():
        raise InputError(f"row {row.id} has no rendered build context ({path} is missing)",
                         where=str(matrix.path), fix="run `python build.py render`")
    return path


def run(matrix: Matrix, row: Row, image: str, log_path: Path, extra: list[str] | None = None) -> bool:
    """Run the GPU smoke suite inside `image`; the output goes to `log_path`. True when every test passed."""
    expectations = row_json(matrix, row)  # bad input first, before looking for docker or installing pytest
    advice = write_advice(log_path.with_name(ADVICE_JSON))
    cmd = docker_command(docker.cli(), image, expectations, pytest_dir(row.python), extra=extra, advice=advice)
    return process.run_logged(cmd, log_path) == 0
