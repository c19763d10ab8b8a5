"""`build.py export` against the embedded registry and the Docker daemon, through the real skopeo: tiny images made
here (no Docker Hub) are exported into parts, and the parts are read back the way the GPU host's unpacker will:
hashes, reassembled streams, the tars' members.

Two kinds of tiny image:
- one laid out by hand (an OCI layout pushed with `skopeo copy`): a second layer with a whiteout and an opaque
  directory, which docker can only write with a RUN, and RUN needs a shell that no image made here without Docker Hub
  has; also a hardlink, a symlink, a long name and a 2 MiB file for thinning;
- one made by docker: `docker import` of a small tar, a COPY layer on top (`docker build`), `docker push`; exported
  from the registry and from the daemon (`--from daemon`), which must give the same streams.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import lzma
import os
import random
import subprocess
import sys
import tarfile
import urllib.request
import uuid
from pathlib import Path

import pytest

from imagematrix.in_image import imagefs
from imagematrix.model import paths
from imagematrix.tools import docker
from tests.conftest import ROOT

ROW = "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311"  # any row of matrix.yaml: export names it in its manifest
MIB = 1 << 20
BIG = random.Random(1).randbytes(2 * MIB)
LONG = "opt/venv/lib/python3.11/site-packages/" + "deeply-nested-package-directory/" * 5 + "kernel.so"
MANIFEST_MEDIA = ", ".join(["application/vnd.oci.image.manifest.v1+json",
                            "application/vnd.docker.distribution.manifest.v2+json"])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tar_of(entries: list[tuple[str, str, bytes | str | None]]) -> bytes:
    """(name, kind, data or link target) -> a tar, as docker writes layers (PAX, directories with a slash)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime, info.mode = 1_700_000_000, 0o755 if kind == "dir" else 0o644
            if kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind in ("symlink", "hardlink"):
                info.type, info.linkname = (tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE), data
            else:
                info.size = len(data)
            t.addfile(info, io.BytesIO(data) if kind == "file" else None)
    return buf.getvalue()


BASE = tar_of([("etc/", "dir", None), ("etc/hello", "file", b"hello\n"), ("etc/gone", "file", b"removed above\n"),
               ("opt/", "dir", None), ("opt/cache/", "dir", None), ("opt/cache/old", "file", b"old\n"),
               ("opt/big.bin", "file", BIG), ("opt/big-again", "hardlink", "opt/big.bin"),
               ("etc/greeting", "symlink", "hello"), (LONG, "file", b"\x7fELF")])
TOP = tar_of([("etc/", "dir", None), ("etc/.wh.gone", "file", b""), ("opt/", "dir", None), ("opt/cache/", "dir", None),
              ("opt/cache/.wh..wh..opq", "file", b""), ("opt/cache/new", "file", b"new\n")])


def names(tar: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        return t.getnames()


def push_oci(ref: str, tmp_path: Path) -> None:
    """The two layers above as an OCI image, pushed to ref with skopeo (from an OCI layout)."""
    layout = tmp_path / "layout"
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def blob(data: bytes) -> dict:
        (blobs / sha(data)).write_bytes(data)
        return {"digest": f"sha256:{sha(data)}", "size": len(data)}

    layers = [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **blob(gzip.compress(t, mtime=0))}
              for t in (BASE, TOP)]
    config = {"architecture": "amd64", "os": "linux",
              "config": {"Env": ["PATH=/opt/venv/bin:/usr/bin", "HELLO=1"], "WorkingDir": "/opt",
                         "Entrypoint": ["/bin/sh"], "Cmd": ["-c", "cat /etc/hello"],
                         "Labels": {"io.imagematrix.row": ROW}},
              "rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha(t)}" for t in (BASE, TOP)]}}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           **blob(json.dumps(config).encode())}, "layers": layers}
    body = json.dumps(manifest).encode()
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": manifest["mediaType"], **blob(body), "annotations": {"org.opencontainers.image.ref.name": "t"}}]}))
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    pushed = subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", f"oci:{layout}:t", f"docker://{ref}"],
                            capture_output=True, text=True, timeout=120)
    assert pushed.returncode == 0, pushed.stderr


def registry_digest(ref: str) -> str:
    """Docker-Content-Digest of ref's manifest, asked of the registry itself."""
    host, rest = ref.split("/", 1)
    name, tag = rest.rsplit(":", 1)
    request = urllib.request.Request(f"http://{host}/v2/{name}/manifests/{tag}", method="HEAD",
                                     headers={"Accept": MANIFEST_MEDIA})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.headers["Docker-Content-Digest"]


def export(*args: str) -> tuple[dict, subprocess.CompletedProcess]:
    proc = subprocess.run([sys.executable, "build.py", "export", "--row", ROW, *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = Path(args[args.index("--out") + 1])
    return json.loads((out / "manifest.json").read_text()), proc


def streams(out: Path, manifest: dict) -> list[bytes]:
    """Each layer's tar, as the unpacker gets it: parts checked, joined, the stream checked, decompressed."""
    tars = []
    decompress = {"gzip": gzip.decompress, "xz": lzma.decompress}[manifest["codec"]]
    for layer in manifest["layers"]:
        stream = b""
        for part in layer["parts"]:
            data = (out / part["name"]).read_bytes()
            assert (sha(data), len(data)) == (part["sha256"], part["size"]) and len(data) <= manifest["part_size"]
            assert part["name"].startswith(layer["stream"][:32] + "." + {"gzip": "gz", "xz": "xz"}[manifest["codec"]])
            stream += data
        assert (sha(stream), len(stream)) == (layer["stream"], layer["stream_size"])
        tars.append(decompress(stream))
    return tars


@pytest.fixture
def oci_image(registry_ns, tmp_path) -> str:
    ref = f"{registry_ns}/export:oci"
    push_oci(ref, tmp_path)
    return ref


def test_export_from_the_registry_carries_each_layer_tar_byte_for_byte(oci_image, tmp_path):
    out = tmp_path / "out"
    manifest, proc = export("--image", oci_image, "--out", out, "--part-mib", "1")
    assert manifest["manifest_digest"] == registry_digest(oci_image)
    assert manifest["image"] == oci_image and manifest["row"] == ROW and manifest["inventory"] is None
    assert [layer["diff_id"] for layer in manifest["layers"]] == [f"sha256:{sha(BASE)}", f"sha256:{sha(TOP)}"]
    assert len(manifest["layers"][0]["parts"]) == 3  # 2 MiB of random bytes, gzip, 1 MiB parts
    assert manifest["config"] == {"Env": ["PATH=/opt/venv/bin:/usr/bin", "HELLO=1"], "WorkingDir": "/opt", "User": "",
                                  "Entrypoint": ["/bin/sh"], "Cmd": ["-c", "cat /etc/hello"]}
    assert manifest["labels"] == {"io.imagematrix.row": ROW}
    base, top = streams(out, manifest)
    assert (base, top) == (BASE, TOP)  # without an inventory: the layers' own tars (their sha256 are the diff_ids)
    assert "etc/.wh.gone" in names(top) and "opt/cache/.wh..wh..opq" in names(top) and LONG in names(base)
    assert [line.split(": ", 1)[1].split(":")[0] for line in proc.stderr.splitlines()[1:]] == ["layer 1/2", "layer 2/2"]
    parts = {part["name"] for layer in manifest["layers"] for part in layer["parts"]}
    assert {p.name for p in out.iterdir()} == {".layers.json", "manifest.json", *parts}  # the temp copy is gone


def test_export_with_an_inventory_thins_the_files_the_host_holds(oci_image, tmp_path):
    inventory = tmp_path / "host-inventory.json"
    inventory.write_text(json.dumps({"format": "imagematrix-host-inventory/1", "files": {sha(BIG): len(BIG)}}))
    out = tmp_path / "out"
    manifest, _ = export("--image", oci_image, "--out", out, "--codec", "xz", "--inventory", inventory)
    assert manifest["inventory"] == {"sha256": sha(inventory.read_bytes()), "files": 1}
    assert [(layer["thinned_files"], layer["thinned_bytes"]) for layer in manifest["layers"]] == [(1, len(BIG)), (0, 0)]
    base, top = streams(out, manifest)
    assert names(base) == names(BASE) and names(top) == names(TOP)
    with tarfile.open(fileobj=io.BytesIO(base)) as t:
        stub = t.getmember("opt/big.bin")
        assert stub.isreg() and stub.size == 0
        assert stub.pax_headers["IMAGEMATRIX.sha256"] == sha(BIG) and stub.pax_headers["IMAGEMATRIX.size"] == str(len(BIG))
        assert t.getmember("opt/big-again").islnk() and t.getmember("etc/greeting").linkname == "hello"
    again, proc = export("--image", oci_image, "--out", out, "--codec", "xz", "--inventory", inventory)
    assert again == manifest and proc.stderr.count("reused") == 2


@pytest.fixture
def docker_image(registry_ns, tmp_path):
    """A two-layer image made by docker (import, then a COPY on top), pushed to the registry and kept in the daemon."""
    if not docker.daemon_running():
        pytest.skip("needs a running Docker daemon: run `python build.py setup`")
    tag = f"{registry_ns}/export:docker-{uuid.uuid4().hex[:6]}"
    rootfs = tar_of([("etc/", "dir", None), ("etc/hello", "file", b"hello\n"), ("etc/greeting", "symlink", "hello"),
                     ("opt/", "dir", None), ("opt/data.bin", "file", BIG[:MIB + 5])])
    base = f"imagematrix-export-base:{uuid.uuid4().hex[:6]}"
    imported = subprocess.run([docker.cli(), "import", "--change", "WORKDIR /opt", "-", base], input=rootfs,
                              capture_output=True, timeout=120)
    assert imported.returncode == 0, imported.stderr
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "added.txt").write_text("added by COPY\n")
    (ctx / "Dockerfile").write_text(f"FROM {base}\nCOPY added.txt /opt/added.txt\nLABEL io.imagematrix.row={ROW}\n")
    try:
        built = docker.run("build", "--quiet", "--tag", tag, str(ctx), timeout=300)
        assert built.returncode == 0, built.stderr[-2000:]
        pushed = docker.run("push", tag, timeout=300)
        assert pushed.returncode == 0, pushed.stderr[-2000:]
        yield tag
    finally:
        docker.run("rmi", tag, base)


def test_export_of_a_docker_made_image_from_the_registry_and_from_the_daemon_gives_the_same_streams(docker_image,
                                                                                                     tmp_path):
    registry_out, daemon_out = tmp_path / "registry", tmp_path / "daemon"
    from_registry, _ = export("--image", docker_image, "--out", registry_out)
    from_daemon, _ = export("--image", docker_image, "--out", daemon_out, "--from", "daemon")
    assert from_registry["manifest_digest"] == registry_digest(docker_image)
    image_id = docker.run("image", "inspect", "--format", "{{.Id}}", docker_image).stdout.strip()
    assert from_daemon["image"] == f"docker-daemon:{docker_image}"
    assert from_daemon["manifest_digest"] == from_daemon["config_digest"] == image_id
    assert from_registry["config_digest"] == image_id
    assert from_daemon["layers"] == from_registry["layers"]  # the same tars, the same gzip streams, the same parts
    assert from_registry["config"]["WorkingDir"] == "/opt" and from_registry["labels"]["io.imagematrix.row"] == ROW
    base, top = streams(registry_out, from_registry)
    assert {"etc/hello", "etc/greeting", "opt/data.bin"} <= set(names(base))
    assert "opt/added.txt" in names(top)
    with tarfile.open(fileobj=io.BytesIO(base)) as t:
        assert t.getmember("etc/greeting").issym() and t.extractfile("opt/data.bin").read() == BIG[:MIB + 5]
    assert [sha(t) for t in (base, top)] == [layer["diff_id"][7:] for layer in from_registry["layers"]]


def test_what_export_writes_the_gpu_hosts_unpacker_restores_whole(oci_image, tmp_path):
    """The chain of image mode up to the run: export (thinned, xz) -> carry.py bundles -> imagefs stash and unpack,
    the thinned file taken from a "host" site-packages whose RECORD lists it. The unpacked tree is the image's."""
    site = tmp_path / "host-site"
    (site / "pkg-1.dist-info").mkdir(parents=True)
    (site / "big.bin").write_bytes(BIG)
    record = base64.urlsafe_b64encode(hashlib.sha256(BIG).digest()).decode().rstrip("=")
    (site / "pkg-1.dist-info" / "RECORD").write_text(f"big.bin,sha256={record},{len(BIG)}\n")
    inventory = tmp_path / "host-inventory.json"
    assert imagefs.main(["inventory", "--only-sites", "--site", str(site), "--out", str(inventory)]) == 0
    out = tmp_path / "out"
    manifest, _ = export("--image", oci_image, "--out", out, "--codec", "xz", "--inventory", inventory, "--part-mib", "1")
    bundles = tmp_path / "bundles"
    planned = subprocess.run([sys.executable, str(paths.SUITES / "gpu" / "carry.py"), "plan", str(out), "--out",
                              str(bundles), "--max-mib", "1"], capture_output=True, text=True, check=True)
    assert json.loads(planned.stdout)["bundles"] >= 1
    store = tmp_path / "store"
    for bundle in sorted(bundles.iterdir()):
        imagefs.stash(str(bundle), imagefs.load_manifest(str(bundle / "manifests" / f"{ROW}.json")), str(store))
    root = tmp_path / "work" / "rootfs"
    result = imagefs.unpack(imagefs.load_manifest(str(out / "manifest.json")), str(store), str(root), [str(site)],
                            log=lambda _line: None)
    assert result["thinned"] == 1
    assert (root / "opt/big.bin").read_bytes() == BIG and os.stat(root / "opt/big-again").st_ino == os.stat(root / "opt/big.bin").st_ino
    assert (root / "etc/hello").read_text() == "hello\n" and os.readlink(root / "etc/greeting") == "hello"
    assert not (root / "etc/gone").exists() and sorted(os.listdir(root / "opt/cache")) == ["new"]
    assert (root / LONG).read_bytes() == b"\x7fELF"
