"""Where a row's flash-attn wheel comes from (stages/flash_attn.py), against a real HTTP server standing for a
release mirror and a PEP 503 index, the real Docker daemon (the wheel image) and the embedded registry (reuse).

The wheels served here are small stand-in wheels (a zip holding a .dist-info/WHEEL, as the sources check) with real
wheel names: which source wins, digest checks, labels, registry reuse and redaction do not depend on the rest. A real
wheel through a real build: the flash-attn and build jobs of .github/workflows/images.yml, where GitHub's
releases (the wheels' only host) are reachable."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import secrets
import threading
import zipfile
from pathlib import Path

import pytest

from imagematrix.knowledge.flash_attn import wheel_spec
from imagematrix.model import labels
from imagematrix.model import matrix as matrix_mod
from imagematrix.model.errors import RuntimeFailure
from imagematrix.model.paths import ROOT
from imagematrix.stages import flash_attn
from imagematrix.tools import docker
from imagematrix.tools import registry as registry_api

FA_ROW = "verl0.9.1-vllm0.24.0-torch2.11.0-cu130-py312-fa2.8.3"
WHEEL = "flash_attn-2.8.3+cu13torch2.11cxx11abiTRUE-cp312-cp312-linux_x86_64.whl"


@pytest.fixture
def row():
    return matrix_mod.load(ROOT / "matrix.yaml").select([FA_ROW])[0]


@pytest.fixture
def server(tmp_path):
    """Serves tmp_path/www on 127.0.0.1: /mirror/v2.8.3/<wheel>, /simple/flash-attn/ and /files/<wheels>."""
    www = tmp_path / "www"
    (www / "mirror" / "v2.8.3").mkdir(parents=True)
    (www / "files").mkdir()
    (www / "simple" / "flash-attn").mkdir(parents=True)
    handler = functools.partial(_QuietHandler, directory=str(www))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output clean
        pass


def stand_in_wheel() -> bytes:
    """A small zip that passes the sources' look inside (flash_attn-2.8.3.dist-info/WHEEL), different each call."""
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as archive:
        archive.writestr("flash_attn-2.8.3.dist-info/WHEEL", "Wheel-Version: 1.0\nTag: cp312-cp312-linux_x86_64\n")
        archive.writestr("flash_attn/__init__.py", f"# {secrets.token_hex(16)}\n")
    return data.getvalue()


def _index(www: Path, files: dict[str, bytes], claimed: dict[str, str] | None = None) -> None:
    """A simple page listing files (served from /files/) with #sha256= fragments (claimed overrides the truth)."""
    anchors = []
    for name, data in files.items():
        (www / "files" / name).write_bytes(data)
        sha = (claimed or {}).get(name, hashlib.sha256(data).hexdigest())
        anchors.append(f'<a href="../../files/{name}#sha256={sha}">{name}</a>')
    (www / "simple" / "flash-attn" / "index.html").write_text("<html><body>" + "\n".join(anchors) + "</body></html>")


def test_index_match_picks_only_the_rows_torch_cuda_python_and_abi(row):
    assert wheel_spec(row).fits(WHEEL)
    assert wheel_spec(row).fits("flash_attn-2.8.3+cu130torch2.11cxx11abiTRUE-cp312-cp312-linux_x86_64.whl")
    assert wheel_spec(row).fits("flash_attn-2.8.3+cu130pt211-cp312-cp312-linux_x86_64.whl")
    for other in ("flash_attn-2.8.3+cu12torch2.11cxx11abiTRUE-cp312-cp312-linux_x86_64.whl",   # CUDA 12
                  "flash_attn-2.8.3+cu13torch2.10cxx11abiTRUE-cp312-cp312-linux_x86_64.whl",   # torch 2.10
                  "flash_attn-2.8.3+cu13torch2.11cxx11abiFALSE-cp312-cp312-linux_x86_64.whl",  # old ABI
                  "flash_attn-2.8.3+cu13torch2.11cxx11abiTRUE-cp311-cp311-linux_x86_64.whl",   # Python 3.11
                  "flash_attn-2.8.2+cu13torch2.11cxx11abiTRUE-cp312-cp312-linux_x86_64.whl",   # version
                  "flash_attn-2.8.3+cu131torch2.11cxx11abiTRUE-cp312-cp312-linux_x86_64.whl"):  # CUDA 13.1
        assert not wheel_spec(row).fits(other), other


def test_sources_in_order_with_reasons_and_no_credentials(server, row, tmp_path):
    www, base = server
    token = secrets.token_hex(8)
    dest = tmp_path / "dl"
    dest.mkdir()
    # (a) the mirror has nothing yet: 404, reported with the URL but never its credentials
    found, why = flash_attn.from_mirror(wheel_spec(row), f"http://user:{token}@{base.removeprefix('http://')}/mirror", dest)
    assert found is None and "answered HTTP 404" in why and token not in why and "***" in why
    # (b) an index with wheels for other keys, and the row's wheel whose claimed digest is wrong: refused
    good = stand_in_wheel()
    _index(www, {"flash_attn-2.8.3+cu12torch2.11cxx11abiTRUE-cp312-cp312-linux_x86_64.whl": b"x", WHEEL: good},
           claimed={WHEEL: "0" * 64})
    found, why = flash_attn.from_indexes(wheel_spec(row), [f"{base}/simple"], dest)
    assert found is None and "differs from the index's" in why and not (dest / WHEEL).exists()
    _index(www, {WHEEL: good})
    found, why = flash_attn.from_indexes(wheel_spec(row), ["http://127.0.0.1:9/simple", f"{base}/simple"], dest)
    assert found == dest / WHEEL and found.read_bytes() == good and why.startswith(f"index {base}/simple")
    # (a) again: a mirror laid out like the releases wins over everything else
    (www / "mirror" / "v2.8.3" / WHEEL).write_bytes(good)
    found, why = flash_attn.from_mirror(wheel_spec(row), f"{base}/mirror", dest)
    assert found == dest / WHEEL and why.startswith("mirror ") and hashlib.sha256(good).hexdigest()[:12] in why


def test_no_source_and_no_compile_fails_before_any_build_with_every_reason(row, tmp_path):
    with pytest.raises(RuntimeFailure) as failure:
        flash_attn.ensure(row, context=tmp_path, registry=None, mirror="http://127.0.0.1:9/m", indexes=[],
                          secrets_files={}, log_dir=tmp_path, log=lambda msg: None, allow_compile=False)
    text = str(failure.value)
    assert f"row {FA_ROW}, stage flash-attn: no source has the wheel for key {wheel_spec(row).key}" in text
    for part in ("mirror: http://127.0.0.1:9/m/v2.8.3/", "indexes: no --flash-attn-index given",
                 "registry: no registry given", "fix: pass --flash-attn-mirror or --flash-attn-index"):
        assert part in text


def test_wheel_image_is_pushed_once_and_reused_from_the_registry(server, row, tmp_path, registry_ns):
    """A wheel from an index becomes flash-attn-wheels:<key> in the registry; the next build (no mirror, no index)
    takes it from there with the same digest; the wheel image holds the wheel and nothing else."""
    www, base = server
    good = stand_in_wheel()
    _index(www, {WHEEL: good})
    logged = []
    first = flash_attn.ensure(row, context=tmp_path, registry=registry_ns, mirror=f"{base}/no-mirror",
                              indexes=[f"{base}/simple"], secrets_files={}, log_dir=tmp_path, log=logged.append,
                              allow_compile=False)
    key = wheel_spec(row).key
    assert first.ref == f"{registry_ns}/flash-attn-wheels:{key}"
    assert first.sha256 == hashlib.sha256(good).hexdigest() and first.origin.startswith("index ")
    assert any(m.startswith(f"flash-attn: pushed {first.ref}") for m in logged), logged
    remote = registry_api.labels(f"{registry_ns}/flash-attn-wheels", key)
    assert remote[labels.FLASH_ATTN_SHA256] == first.sha256 and remote[labels.FLASH_ATTN_FILE] == WHEEL
    docker.run("rmi", first.ref)
    again = flash_attn.ensure(row, context=tmp_path, registry=registry_ns, mirror=f"{base}/no-mirror", indexes=[],
                              secrets_files={}, log_dir=tmp_path, log=lambda msg: None, allow_compile=False)
    assert again.ref == first.ref and again.sha256 == first.sha256 and again.origin.startswith("registry ")
    # the wheel image holds one layer of about the wheel's size (FROM scratch + the wheel)
    assert docker.run("pull", again.ref).returncode == 0
    size = int(docker.run("image", "inspect", "--format", "{{.Size}}", again.ref).stdout.strip())
    assert len(good) <= size < len(good) + 4096
    docker.run("rmi", again.ref)
