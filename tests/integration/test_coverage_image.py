"""stages/coverage_image and `build.py coverage` on small real images made here from the ELF fixtures of
tests/fixtures/cuda (no GPU, no Docker Hub): an OCI image of two gzip layers pushed to the embedded registry (the
second with a whiteout), and a one-layer image made by `docker import`, read through `docker save`."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest

from imagematrix.stages import coverage_image
from imagematrix.tools import cuobjdump, docker
from tests.conftest import ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "cuda"
SP = "opt/venv/lib/python3.11/site-packages"
ROW = "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311"

pytestmark = pytest.mark.skipif(cuobjdump.find() is None, reason=f"needs cuobjdump: {cuobjdump.INSTALL_HINT}")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tar_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


BASE = tar_of({f"{SP}/torch/lib/libtorch_cuda.so": fixture("libsass.so"),
               f"{SP}/torch/lib/libold.so": fixture("libsass.so"),
               f"{SP}/vllm/_C.abi3.so": fixture("libboth.so"),
               f"{SP}/torch/lib/libc10.so": fixture("libnone.so"),
               f"{SP}/torch/README.txt": b"not an ELF\n" * 20})
TOP = tar_of({f"{SP}/nvidia/cublas/lib/libcublas.so.12": fixture("libptx.so"),
              f"{SP}/torch/lib/.wh.libold.so": b""})


def push_oci(ref: str, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def blob(data: bytes) -> dict:
        (blobs / sha(data)).write_bytes(data)
        return {"digest": f"sha256:{sha(data)}", "size": len(data)}

    layers = [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **blob(gzip.compress(t, mtime=0))}
              for t in (BASE, TOP)]
    config = {"architecture": "amd64", "os": "linux", "config": {},
              "rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha(t)}" for t in (BASE, TOP)]}}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **blob(json.dumps(config).encode())},
                "layers": layers}
    body = json.dumps(manifest).encode()
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": manifest["mediaType"], **blob(body), "annotations": {"org.opencontainers.image.ref.name": "t"}}]}))
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    pushed = subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", f"oci:{layout}:t", f"docker://{ref}"],
                            capture_output=True, text=True, timeout=120)
    assert pushed.returncode == 0, pushed.stderr


@pytest.fixture
def cold_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGEMATRIX_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_an_image_in_the_registry_is_read_layer_by_layer_with_whiteouts(registry_ns, tmp_path, cold_cache):
    if shutil.which("skopeo") is None:
        pytest.skip("needs skopeo: run `python build.py setup`")
    ref = f"{registry_ns}/coverage:fixture"
    push_oci(ref, tmp_path)
    first = coverage_image.scan_registry(ref)
    assert {p: (c.sass, c.ptx) for p, c in first.files.items()} == {
        f"/{SP}/torch/lib/libtorch_cuda.so": (("sm_75", "sm_80", "sm_90"), ()),
        f"/{SP}/vllm/_C.abi3.so": (("sm_80",), ("compute_90",)),
        f"/{SP}/nvidia/cublas/lib/libcublas.so.12": ((), ("compute_80",)),
    }  # libold.so: whited out by the top layer; libc10.so: no device code; README: not an ELF
    assert (first.layers, first.cached_layers, first.unread) == (2, 0, {})
    again = coverage_image.scan_registry(ref)
    assert again.cached_layers == 2 and again.files == first.files

    shutil.copy(ROOT / "matrix.yaml", tmp_path / "matrix.yaml")
    shutil.copytree(ROOT / "locks", tmp_path / "locks")
    cli = [sys.executable, "build.py", "coverage", "--matrix", str(tmp_path / "matrix.yaml"), "--row", ROW,
           "--image", ref]
    recorded = subprocess.run(cli, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert recorded.returncode == 0, recorded.stderr[-2000:]
    assert "record" in recorded.stdout and (tmp_path / "coverage" / f"{ROW}.json").is_file()
    baseline = json.loads((tmp_path / "coverage" / f"{ROW}.json").read_text())
    assert baseline["verdicts"]["7.5"] == {"verdict": "none", "lacking": ["cublas", "vllm"], "jit": [],
                                           "optional_lacking": [],
                                           "libraries": {"cublas": "none", "torch": "native", "vllm": "none"}}
    assert baseline["verdicts"]["9.0"]["verdict"] == "ptx-jit" and baseline["driver"]["minimum"] == "525.60.13"
    passed = subprocess.run(cli, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert passed.returncode == 0 and "pass" in passed.stdout


def test_a_local_image_is_read_through_docker_save(cold_cache):
    if not docker.daemon_running():
        pytest.skip("needs a running Docker daemon: run `python build.py setup`")
    tag = f"imagematrix-coverage-fixture:{uuid.uuid4().hex[:8]}"
    imported = subprocess.run([docker.cli(), "import", "-", tag], input=BASE, capture_output=True, timeout=120)
    assert imported.returncode == 0, imported.stderr
    try:
        found = coverage_image.scan_daemon(tag)
        assert sorted(found.files) == [f"/{SP}/torch/lib/libold.so", f"/{SP}/torch/lib/libtorch_cuda.so",
                                       f"/{SP}/vllm/_C.abi3.so"]
        assert coverage_image.scan_daemon(tag).cached_layers == 1  # answered from the cache, no docker save
    finally:
        docker.run("rmi", tag)
