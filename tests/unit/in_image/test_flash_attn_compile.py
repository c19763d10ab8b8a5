"""The flash-attn compile script's own decisions (in_image/flash_attn_compile.py): jobs from cores and memory,
progress lines, the wheel's local version, the CUDA_HOME it builds for PyPI's CUDA wheels, and its refusals.
The compile itself ran for real in the compile stage here and on the GPU host (docs/benchmarks.md)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from imagematrix.in_image import flash_attn_compile as fac

GB = 1024**3


@pytest.mark.parametrize(("cores", "mem_gb", "archs", "jobs"), [
    (16, 125, ["90"], 16),                    # the H200 host: cores decide (measured run: MAX_JOBS=16)
    (2, 22, ["90"], 2),                       # this 2-core machine
    (64, 40, ["90"], 10),                     # memory decides: 4 GB per one-thread job
    (16, 125, ["80", "90", "100", "120"], 4),  # 4 threads per job: cores // 4
    (16, 3, ["90"], 0),                       # not even one job fits
])
def test_jobs_from_cores_and_memory(cores, mem_gb, archs, jobs):
    assert fac.choose_jobs(cores, mem_gb * GB, fac.nvcc_threads(archs)) == jobs


def test_progress_line_estimates_what_is_left():
    assert fac.progress_line(0, 73, 10) == "flash-attn compile: 0/73 units, 10s elapsed"
    assert fac.progress_line(10, 73, 600) == "flash-attn compile: 10/73 units, 10m00s elapsed, about 63m00s left"
    assert fac.progress_line(73, 73, 1330) == "flash-attn compile: 73/73 units, 22m10s elapsed"
    assert fac.UNIT_RE.match("[12/73] /usr/local/cuda/bin/nvcc ...").groups() == ("12", "73")


def test_local_version_follows_flash_attn_release_naming():
    assert fac.local_version("2.11.0+cu130", "13.0", True) == "cu13torch2.11cxx11abiTRUE"
    assert fac.local_version("2.6.0+cu124", "12.4", False) == "cu12torch2.6cxx11abiFALSE"


def test_cuda_home_for_pypi_wheels_adds_lib64_and_unversioned_cudart(tmp_path):
    root = tmp_path / "site" / "nvidia" / "cu13"
    for rel in ("bin/nvcc", "include/cuda.h", "lib/libcudart.so.13", "nvvm/bin/cicc"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    home = fac.cuda_home(root / "bin" / "nvcc", tmp_path / "scratch")
    assert home != root
    assert (home / "bin" / "nvcc").read_text() == "bin/nvcc" and (home / "nvvm" / "bin" / "cicc").exists()
    assert (home / "lib64" / "libcudart.so").resolve() == (root / "lib" / "libcudart.so.13").resolve()
    # a toolkit install is used as it is
    toolkit = tmp_path / "cuda"
    (toolkit / "bin").mkdir(parents=True)
    (toolkit / "lib64").mkdir()
    (toolkit / "bin" / "nvcc").write_text("")
    (toolkit / "lib64" / "libcudart.so").write_text("")
    assert fac.cuda_home(toolkit / "bin" / "nvcc", tmp_path / "other") == toolkit


def test_find_nvcc_prefers_cuda_home_then_path_then_the_wheels(tmp_path):
    wheel_nvcc = tmp_path / "site" / "nvidia" / "cu13" / "bin" / "nvcc"
    wheel_nvcc.parent.mkdir(parents=True)
    wheel_nvcc.write_text("")
    assert fac.find_nvcc([str(tmp_path / "site")], {"PATH": str(tmp_path / "empty")}) == wheel_nvcc
    assert fac.find_nvcc([str(tmp_path / "site")], {"CUDA_HOME": str(tmp_path / "none"), "PATH": ""}) is None
    path_nvcc = tmp_path / "bin" / "nvcc"
    path_nvcc.parent.mkdir()
    path_nvcc.write_text("")
    path_nvcc.chmod(0o755)
    assert fac.find_nvcc([str(tmp_path / "site")], {"PATH": str(path_nvcc.parent)}) == path_nvcc


def test_link_to_finds_the_sdist_on_a_simple_page():
    html = ('<a href="https://files.example/x/flash_attn-2.8.2.tar.gz#sha256=aa">flash_attn-2.8.2.tar.gz</a>\n'
            '<a href="../../packages/flash_attn-2.8.3.tar.gz#sha256=bb">flash_attn-2.8.3.tar.gz</a>')
    assert fac.link_to(html, "flash_attn-2.8.3.tar.gz", "http://idx/simple/flash-attn/") == \
        "http://idx/packages/flash_attn-2.8.3.tar.gz"
    assert fac.link_to(html, "flash_attn-2.8.1.tar.gz", "http://idx/simple/flash-attn/") is None


def test_usage_errors_exit_2_and_a_missing_torch_exits_3_before_any_work(tmp_path, capsys):
    sdist = tmp_path / "flash_attn-2.8.3.tar.gz"
    sdist.write_bytes(b"x")
    for argv in ([str(sdist), "--archs", "9x", "--out", str(tmp_path)],
                 ["--archs", "90", "--out", str(tmp_path)],
                 ["--fetch", "flash_attn-2.8.3.tar.gz", "--sha256", "abc", "--archs", "90", "--out", str(tmp_path)],
                 [str(tmp_path / "missing.tar.gz"), "--archs", "90", "--out", str(tmp_path)],
                 [str(sdist), "--archs", "90", "--out", str(tmp_path), "--jobs", "0"]):
        with pytest.raises(SystemExit) as exit_:
            fac.main(argv)
        assert exit_.value.code == 2, argv
    try:
        import torch  # noqa: F401
        pytest.skip("torch is installed here: the no-torch refusal cannot be shown")
    except ImportError:
        pass
    assert fac.main([str(sdist), "--archs", "90", "--out", str(tmp_path / "out")]) == 3
    assert "cannot start: torch does not import" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_fetch_refuses_bytes_with_another_digest(tmp_path, monkeypatch):
    """The index is a local folder served through file:// URLs (urllib reads them like HTTP)."""
    page = tmp_path / "simple" / "flash-attn"
    page.mkdir(parents=True)
    (tmp_path / "flash_attn-2.8.3.tar.gz").write_bytes(b"the sdist")
    (page / "index.html").write_text('<a href="../../flash_attn-2.8.3.tar.gz">flash_attn-2.8.3.tar.gz</a>')
    env = {"PIP_INDEX_URL": f"file://{tmp_path}/simple"}
    monkeypatch.setattr(fac.urllib.request, "urlopen", _file_urlopen)
    dest = tmp_path / "dest"
    dest.mkdir()
    good = hashlib.sha256(b"the sdist").hexdigest()
    assert fac.fetch("flash_attn-2.8.3.tar.gz", good, dest, env).read_bytes() == b"the sdist"
    with pytest.raises(fac.Unfit, match="expected 0000"):
        fac.fetch("flash_attn-2.8.3.tar.gz", "0" * 64, dest / "..", env)
    with pytest.raises(fac.Unfit, match="is not on"):
        fac.fetch("flash_attn-2.8.1.tar.gz", good, dest, env)


def _file_urlopen(url, timeout=None):
    """urlopen for file:// URLs of directories: serves index.html for a folder, like a web server."""
    path = Path(url.removeprefix("file://"))
    if path.is_dir():
        path = path / "index.html"
    return open(os.fspath(path), "rb")
