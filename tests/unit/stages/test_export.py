"""build.py export's pure parts (docs/image-mode.md, `imagematrix-export/1`): thinning a layer tar against a host
inventory, cutting a stream into parts, the manifest's schema, the inventory's validation against hostile files and
the reuse map. skopeo is replaced by a fake that writes its `dir:` layout; the real one runs in
tests/integration/test_export_registry.py."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import os
import random
import re
import tarfile
import types
from pathlib import Path

import pytest

from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.stages import export
from imagematrix.tools import skopeo

MIB = 1 << 20
ROW = "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311"
INV = "imagematrix-host-inventory/1"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob(size: int, seed: int) -> bytes:
    """size incompressible bytes, the same for the same seed."""
    return random.Random(seed).randbytes(size)


def member(name: str, data: bytes | None = None, **attrs) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.size = len(data) if data is not None else 0
    info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = 1_700_000_000, 0o644, 1000, 1000, "u", "g"
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def tar_of(members, fmt=tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for info, data in members:
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def read_tar(data: bytes) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as t:
        for m in t:
            out.append((m, t.extractfile(m).read() if m.isreg() else None))
    return out


METADATA = ("name", "mode", "uid", "gid", "uname", "gname", "mtime", "type", "linkname", "devmajor", "devminor",
            "size", "pax_headers")


def metadata(info: tarfile.TarInfo, derived: bool = True) -> dict:
    """info's metadata; without `derived`, the PAX headers that only encode a long or non-ASCII name (a GNU tar
    writes those in its own way) are left out."""
    out = {key: getattr(info, key) for key in METADATA}
    if not derived:
        out["pax_headers"] = {k: v for k, v in info.pax_headers.items() if k not in ("path", "linkpath")}
    return out


BIG_IN = blob(MIB, 1)                 # exactly 1 MiB, in the inventory: a stub
BIG_IN_2 = blob(MIB + 7, 2)           # in the inventory, with xattrs: a stub that keeps them
BIG_OUT = blob(MIB, 3)                # 1 MiB, same size as BIG_IN, not in the inventory: carried
SMALL_IN = blob(MIB - 1, 4)           # in the inventory but under 1 MiB: carried
WRONG_SIZE = blob(MIB + 5, 5)         # its digest is in the inventory with another size: carried
LONG = "usr/lib/python3.11/site-packages/" + "very-long-directory-name/" * 6 + "torch_cuda_kernels.so"
INVENTORY = {sha(BIG_IN): len(BIG_IN), sha(BIG_IN_2): len(BIG_IN_2), sha(SMALL_IN): len(SMALL_IN),
             sha(WRONG_SIZE): len(WRONG_SIZE) + 1, "0" * 64: 12}


def layer_members():
    return [
        member("usr/", type=tarfile.DIRTYPE, mode=0o755),
        member("usr/big-in.bin", BIG_IN, mode=0o600, uid=0, gid=0, uname="root", gname="root"),
        member(LONG, BIG_IN_2, pax_headers={"SCHILY.xattr.user.origin": "wheel", "mtime": "1700000000.5"}),
        member("usr/big-out.bin", BIG_OUT),
        member("usr/small-in.bin", SMALL_IN),
        member("usr/wrong-size.bin", WRONG_SIZE),
        member("usr/hello.txt", b"hello\n"),
        member("usr/empty", b""),
        member("usr/link", type=tarfile.SYMTYPE, linkname="hello.txt", mode=0o777),
        member("usr/hard", type=tarfile.LNKTYPE, linkname="usr/big-in.bin"),  # to a thinned file
        member("usr/" + "l" * 120, type=tarfile.SYMTYPE, linkname="../" + "t" * 150),
        member("dev/null", type=tarfile.CHRTYPE, devmajor=1, devminor=3),
        member("dev/fifo", type=tarfile.FIFOTYPE),
        member("etc/.wh.removed", b""),
        member("opt/.wh..wh..opq", b""),
        member("usr/ünïcode-ñame", b"x"),
    ]


SMALL_MEMBERS = [m for m in layer_members() if m[1] is None or len(m[1]) < 4096]  # the big files left out
SMALL = tar_of(SMALL_MEMBERS)


def thinned(data: bytes, files: dict, tmp_path: Path) -> tuple[bytes, export.Thinned]:
    out = io.BytesIO()
    result = export.thin(io.BytesIO(data), out, files, tmp_path)
    return out.getvalue(), result


# --- thinning ---

@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT], ids=["pax", "gnu"])
def test_thinning_replaces_exactly_the_inventory_files_of_1_mib_and_more_keeping_everything_else(fmt, tmp_path):
    if fmt == tarfile.GNU_FORMAT:  # GNU tar has no PAX headers: the one with xattrs is left out
        members = [m for m in layer_members() if not m[0].pax_headers]
    else:
        members = layer_members()
    original = read_tar(tar_of(members, fmt))
    derived = fmt != tarfile.GNU_FORMAT  # a GNU tar's long names come back as PAX path headers
    data, result = thinned(tar_of(members, fmt), INVENTORY, tmp_path)
    rewritten = read_tar(data)

    stubs = {"usr/big-in.bin": BIG_IN} | ({LONG: BIG_IN_2} if fmt == tarfile.PAX_FORMAT else {})
    assert (result.files, result.bytes) == (len(stubs), sum(map(len, stubs.values())))
    assert [m.name for m, _ in rewritten] == [m.name for m, _ in original]  # names and order kept, long ones too
    for (old, old_data), (new, new_data) in zip(original, rewritten, strict=True):
        if old.name in stubs:
            assert new.isreg() and new.size == 0 and new_data == b""
            assert new.pax_headers["IMAGEMATRIX.sha256"] == sha(stubs[old.name])
            assert new.pax_headers["IMAGEMATRIX.size"] == str(len(stubs[old.name]))
            expect = metadata(old) | {"size": 0, "pax_headers": old.pax_headers | {
                "IMAGEMATRIX.sha256": sha(stubs[old.name]), "IMAGEMATRIX.size": str(len(stubs[old.name]))}}
            assert metadata(new, derived) == expect
        else:
            assert metadata(new, derived) == metadata(old, derived), old.name
            assert new_data == old_data, old.name
    assert list(tmp_path.iterdir()) == []  # spooled candidates are gone


def test_a_stub_keeps_xattrs_and_fractional_mtime_and_drops_a_pax_size(tmp_path):
    info, _ = member("big", BIG_IN, pax_headers={"SCHILY.xattr.security.capability": "\x01", "mtime": "1.25"})
    info.pax_headers["size"] = str(len(BIG_IN))
    data, result = thinned(tar_of([(info, BIG_IN)]), INVENTORY, tmp_path)
    (new, body), = read_tar(data)
    assert result.files == 1 and new.size == 0 and body == b""
    assert new.mtime == 1.25 and new.pax_headers["SCHILY.xattr.security.capability"] == "\x01"
    assert "size" not in new.pax_headers


def test_without_candidates_nothing_is_thinned_and_an_empty_layer_stays_a_tar(tmp_path):
    data, result = thinned(tar_of(layer_members()), {}, tmp_path)
    assert result.files == 0
    assert [metadata(m) for m, _ in read_tar(data)] == [metadata(m) for m, _ in read_tar(tar_of(layer_members()))]
    empty, result = thinned(b"\0" * 1024, INVENTORY, tmp_path)  # what BuildKit writes for a RUN that changed nothing
    assert result.files == 0 and read_tar(empty) == []


def test_a_file_that_is_not_a_tar_fails(tmp_path):
    with pytest.raises(RuntimeFailure, match="not a tar"):
        thinned(b"", INVENTORY, tmp_path)


# --- parts ---

def test_parts_are_cut_at_part_size_named_by_the_stream_digest_and_hashed(tmp_path):
    stream = blob(10_000, 7)
    writer = export.PartWriter(tmp_path, 3000)
    for start in range(0, len(stream), 777):  # writes that straddle part boundaries
        writer.write(stream[start:start + 777])
    digest, parts = writer.finish("xz")
    assert digest == sha(stream) and writer.size == len(stream)
    assert [p.size for _, p in parts] == [3000, 3000, 3000, 1000]
    assert [p.name for _, p in parts] == [f"{digest[:32]}.xz.{i:03d}" for i in range(4)]
    assert b"".join(path.read_bytes() for path, _ in parts) == stream
    for path, part in parts:
        assert sha(path.read_bytes()) == part.sha256 and path.stat().st_size == part.size


def test_a_stream_of_exactly_n_parts_has_no_empty_last_part(tmp_path):
    writer = export.PartWriter(tmp_path, 100)
    writer.write(b"x" * 300)
    _, parts = writer.finish("gzip")
    assert [p.size for _, p in parts] == [100, 100, 100] and parts[0][1].name.endswith(".gz.000")


def test_more_than_999_parts_is_refused(tmp_path):
    writer = export.PartWriter(tmp_path, 1)
    with pytest.raises(InputError, match="1000 parts"):
        writer.write(b"x" * 1001)


def layer_file(tmp_path: Path, data: bytes) -> tuple[Path, str]:
    path = tmp_path / "layer.tar"
    path.write_bytes(data)
    return path, f"sha256:{sha(data)}"


def reassemble(out_dir: Path, entry: dict) -> bytes:
    return b"".join((out_dir / p["name"]).read_bytes() for p in entry["parts"])


@pytest.mark.parametrize("codec", ["gzip", "xz"])
def test_without_inventory_the_stream_is_the_layer_tar_byte_for_byte(codec, tmp_path):
    data = tar_of(layer_members() if codec == "gzip" else SMALL_MEMBERS)  # xz is slow on incompressible bytes
    path, diff_id = layer_file(tmp_path, data)
    out_dir, work = tmp_path / "out", tmp_path / "work"
    out_dir.mkdir(), work.mkdir()
    entry = export.carry_layer(path, diff_id, codec=codec, part_size=MIB, inventory=None, work=work, out_dir=out_dir)
    stream = reassemble(out_dir, entry)
    assert sha(stream) == entry["stream"] and len(stream) == entry["stream_size"]
    assert (gzip.decompress if codec == "gzip" else lzma.decompress)(stream) == data
    assert entry["size"] == len(data) and entry["diff_id"] == diff_id
    assert len(entry["parts"]) == -(-entry["stream_size"] // MIB) >= (codec == "gzip") + 1
    again = export.carry_layer(path, diff_id, codec=codec, part_size=MIB, inventory=None, work=work, out_dir=out_dir)
    assert again == entry  # the same layer gives the same stream (gzip without name or time)


def test_with_an_inventory_the_stream_is_the_thinned_tar(tmp_path):
    data = tar_of(layer_members())
    path, diff_id = layer_file(tmp_path, data)
    inventory = export.Inventory("f" * 64, INVENTORY)
    entry = export.carry_layer(path, diff_id, codec="gzip", part_size=MIB, inventory=inventory, work=tmp_path,
                               out_dir=tmp_path)
    members = read_tar(gzip.decompress(reassemble(tmp_path, entry)))
    assert entry["thinned_files"] == 2 and entry["thinned_bytes"] == len(BIG_IN) + len(BIG_IN_2)
    assert {m.name for m, _ in members if "IMAGEMATRIX.sha256" in m.pax_headers} == {"usr/big-in.bin", LONG}


def test_a_layer_whose_digest_is_not_the_diff_id_fails_and_leaves_no_part(tmp_path):
    path, _ = layer_file(tmp_path, tar_of(layer_members()))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(RuntimeFailure, match="rootfs.diff_ids"):
        export.carry_layer(path, "sha256:" + "0" * 64, codec="gzip", part_size=MIB, inventory=None, work=tmp_path,
                           out_dir=out_dir)
    assert list(out_dir.iterdir()) == []


def test_a_layer_left_compressed_fails(tmp_path):
    path, diff_id = layer_file(tmp_path, gzip.compress(tar_of(layer_members())))
    with pytest.raises(RuntimeFailure, match="left compressed"):
        export.carry_layer(path, diff_id, codec="gzip", part_size=MIB, inventory=None, work=tmp_path, out_dir=tmp_path)


# --- the inventory: hostile files ---

def inventory_bytes(files, fmt=INV) -> bytes:
    return json.dumps({"format": fmt, "files": files}).encode()


def test_a_valid_inventory_is_read_with_its_own_digest(tmp_path):
    path = tmp_path / "host-inventory.json"
    path.write_bytes(inventory_bytes({"a" * 64: 5, "b" * 64: 0}))
    inv = export.load_inventory(path)
    assert inv.files == {"a" * 64: 5, "b" * 64: 0}
    assert inv.summary() == {"sha256": sha(path.read_bytes()), "files": 2}


@pytest.mark.parametrize(("data", "says"), [
    (b"{not json", "not JSON"),
    (b"\xff\xfe{}", "not JSON"),
    (b"[]", "top level is a list"),
    (b'"text"', "top level is a str"),
    (inventory_bytes({}, fmt="imagematrix-host-inventory/2"), "format"),
    (json.dumps({"files": {}}).encode(), "format"),
    (json.dumps({"format": INV}).encode(), "'files' is NoneType"),
    (json.dumps({"format": INV, "files": [["a" * 64, 1]]}).encode(), "'files' is list"),
    (inventory_bytes({"A" * 64: 1}), "not a sha256"),
    (inventory_bytes({"a" * 63: 1}), "not a sha256"),
    (inventory_bytes({"a" * 64 + "\n": 1}), "not a sha256"),
    (inventory_bytes({"../../etc/passwd": 1}), "not a sha256"),
    (inventory_bytes({"a" * 64: "1"}), "not a non-negative integer"),
    (inventory_bytes({"a" * 64: 1.0}), "not a non-negative integer"),
    (inventory_bytes({"a" * 64: True}), "not a non-negative integer"),
    (inventory_bytes({"a" * 64: -1}), "not a non-negative integer"),
    (inventory_bytes({"a" * 64: None}), "not a non-negative integer"),
    (inventory_bytes({"a" * 64: {"size": 1}}), "not a non-negative integer"),
])
def test_a_hostile_inventory_is_an_input_error_naming_the_file(data, says, tmp_path):
    path = tmp_path / "host-inventory.json"
    path.write_bytes(data)
    with pytest.raises(InputError) as caught:
        export.load_inventory(path)
    assert says in caught.value.message and caught.value.where == str(path)


def test_an_inventory_over_64_mib_is_refused_unread(tmp_path):
    path = tmp_path / "huge.json"
    with open(path, "wb") as f:
        f.truncate(64 * MIB + 1)  # sparse: nothing is written
    with pytest.raises(InputError, match="at most 64 MiB") as caught:
        export.load_inventory(path)
    assert caught.value.where == str(path)


def test_a_missing_inventory_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        export.load_inventory(tmp_path / "absent.json")


@pytest.mark.parametrize("value", [0, -1, 61, 1000])
def test_part_mib_outside_1_to_60_is_refused_saying_why(value, run):
    result = run("export", "--row", ROW, "--out", "/nonexistent/out", "--part-mib", str(value))
    assert result.code == 2 and "64 MiB" in result.err, result


def test_a_hostile_inventory_on_the_command_line_exits_2_naming_it(run, tmp_path, monkeypatch):
    monkeypatch.setattr(skopeo, "inspect_raw", lambda ref: pytest.fail("read the image before the inventory"))
    path = tmp_path / "inv.json"
    path.write_bytes(inventory_bytes({"z" * 64: 1}))
    result = run("export", "--row", ROW, "--image", "127.0.0.1:5000/x/y:z", "--out", tmp_path / "o",
                 "--inventory", path)
    assert result.code == 2 and str(path) in result.err and "not a sha256" in result.err, result


# --- the whole export, skopeo faked ---

class FakeRegistry:
    """What skopeo would read: images as (manifest bytes, config bytes, layer tars), served by tag and digest."""

    def __init__(self):
        self.refs: dict[str, bytes] = {}
        self.blobs: dict[str, bytes] = {}
        self.copies = 0

    def add(self, ref: str, layers: list[bytes], config: dict | None = None, index: bool = False) -> str:
        diff_ids = [f"sha256:{sha(t)}" for t in layers]
        cfg = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids},
                          "config": config or {}}).encode()
        self.blobs[f"sha256:{sha(cfg)}"] = cfg
        gz = [gzip.compress(t, mtime=0) for t in layers]
        for t, g in zip(layers, gz, strict=True):
            self.blobs[f"sha256:{sha(g)}"] = t  # skopeo --dest-decompress hands out the tar
        raw = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": f"sha256:{sha(cfg)}",
                       "size": len(cfg)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": f"sha256:{sha(g)}",
                        "size": len(g)} for g in gz]}, indent=3).encode()  # bytes a re-encoding would change
        repo = export.repository_of(ref)
        self.refs[f"{repo}@sha256:{sha(raw)}"] = raw
        if index:
            idx = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + "e" * 64,
                 "size": 1, "platform": {"os": "unknown", "architecture": "unknown"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": f"sha256:{sha(raw)}",
                 "size": len(raw), "platform": {"os": "linux", "architecture": "amd64"}}]}).encode()
            self.refs[ref] = idx
        else:
            self.refs[ref] = raw
        return f"sha256:{sha(raw)}"

    def inspect_raw(self, ref: str) -> bytes:
        if ref not in self.refs:
            raise RuntimeFailure(f"skopeo inspect --raw docker://{ref} failed: manifest unknown")
        return self.refs[ref]

    def copy_to_dir(self, ref: str, dest: Path, *, decompress: bool = True, daemon: bool = False) -> None:
        assert decompress and not daemon and "@sha256:" in ref  # by digest: the tag may move meanwhile
        self.copies += 1
        doc = json.loads(self.refs[ref])
        dest.mkdir(parents=True)
        layers = []
        for layer in doc["layers"]:
            tar = self.blobs[layer["digest"]]
            (dest / sha(tar)).write_bytes(tar)
            layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": f"sha256:{sha(tar)}",
                           "size": len(tar)})
        cfg = doc["config"]["digest"]
        (dest / cfg.removeprefix("sha256:")).write_bytes(self.blobs[cfg])
        (dest / "manifest.json").write_text(json.dumps({**doc, "layers": layers}))
        (dest / "version").write_text("Directory Transport Version: 1.1\n")


@pytest.fixture
def registry(monkeypatch):
    fake = FakeRegistry()
    monkeypatch.setattr(skopeo, "inspect_raw", fake.inspect_raw)
    monkeypatch.setattr(skopeo, "copy_to_dir", fake.copy_to_dir)
    return fake


ROW_OBJ = types.SimpleNamespace(id=ROW)
REF = "127.0.0.1:5000/ns/verl:" + ROW
BASE = tar_of(layer_members())
TOP = tar_of([member("etc/.wh.removed", b""), member("app/run.sh", b"#!/bin/sh\n", mode=0o755)])
CONFIG = {"Env": ["PATH=/opt/venv/bin:/usr/bin", "A=1"], "WorkingDir": "/work", "User": "1000",
          "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["bash"], "Labels": {"io.imagematrix.row": ROW}}


def check_schema(doc: dict) -> None:
    """Every key and type of docs/image-mode.md's manifest.json, nothing more."""
    hexdigest = re.compile(r"[0-9a-f]{64}")
    assert set(doc) == {"format", "row", "image", "manifest_digest", "config_digest", "config", "labels", "codec",
                        "part_size", "inventory", "layers"}
    assert doc["format"] == "imagematrix-export/1"
    assert isinstance(doc["row"], str) and isinstance(doc["image"], str)
    for key in ("manifest_digest", "config_digest"):
        assert doc[key].startswith("sha256:") and hexdigest.fullmatch(doc[key][7:])
    assert set(doc["config"]) == {"Env", "WorkingDir", "User", "Entrypoint", "Cmd"}
    assert all(isinstance(doc["config"][k], list) for k in ("Env", "Entrypoint", "Cmd"))
    assert isinstance(doc["config"]["WorkingDir"], str) and isinstance(doc["config"]["User"], str)
    assert isinstance(doc["labels"], dict) and doc["codec"] in ("gzip", "xz")
    assert type(doc["part_size"]) is int and doc["part_size"] > 0
    if doc["inventory"] is not None:
        assert set(doc["inventory"]) == {"sha256", "files"} and hexdigest.fullmatch(doc["inventory"]["sha256"])
        assert type(doc["inventory"]["files"]) is int
    ext = {"gzip": "gz", "xz": "xz"}[doc["codec"]]
    for layer in doc["layers"]:
        assert set(layer) == {"diff_id", "size", "stream", "stream_size", "thinned_files", "thinned_bytes", "parts"}
        assert layer["diff_id"].startswith("sha256:") and hexdigest.fullmatch(layer["diff_id"][7:])
        assert hexdigest.fullmatch(layer["stream"])
        assert all(type(layer[k]) is int for k in ("size", "stream_size", "thinned_files", "thinned_bytes"))
        assert layer["parts"] and sum(p["size"] for p in layer["parts"]) == layer["stream_size"]
        for i, part in enumerate(layer["parts"]):
            assert set(part) == {"name", "sha256", "size"}
            assert part["name"] == f"{layer['stream'][:32]}.{ext}.{i:03d}" and hexdigest.fullmatch(part["sha256"])
            assert 0 < part["size"] <= doc["part_size"]


@pytest.mark.parametrize("index", [False, True], ids=["manifest", "index"])
def test_the_manifest_follows_the_format(index, registry, tmp_path):
    digest = registry.add(REF, [BASE, TOP], CONFIG, index=index)
    lines = []
    doc = export.export(ROW_OBJ, REF, tmp_path / "out", 1, "gzip", None, lines.append)
    check_schema(doc)
    assert json.loads((tmp_path / "out" / "manifest.json").read_text()) == doc
    assert doc["manifest_digest"] == digest  # the sha256 of the bytes served, whatever their spacing
    assert doc["config"] == {k: v for k, v in CONFIG.items() if k != "Labels"}
    assert doc["labels"] == CONFIG["Labels"] and doc["row"] == ROW and doc["image"] == REF
    assert doc["part_size"] == MIB and doc["inventory"] is None
    assert [layer["diff_id"] for layer in doc["layers"]] == [f"sha256:{sha(BASE)}", f"sha256:{sha(TOP)}"]
    base = doc["layers"][0]
    assert len(base["parts"]) == -(-base["stream_size"] // MIB) > 1  # BASE is 5 MiB of incompressible data
    for layer, tar in zip(doc["layers"], (BASE, TOP), strict=True):
        assert gzip.decompress(reassemble(tmp_path / "out", layer)) == tar
    assert [line.split(":")[0] for line in lines[1:]] == ["layer 1/2", "layer 2/2"]
    left = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert left == sorted(["manifest.json", ".layers.json", *(p["name"] for layer in doc["layers"]
                                                              for p in layer["parts"])])  # the temp copy is gone


def test_an_image_holding_one_layer_twice_is_exported(registry, tmp_path):
    empty = b"\0" * 1024
    registry.add(REF, [empty, BASE, empty])
    doc = export.export(ROW_OBJ, REF, tmp_path / "out", 48, "gzip", None, lambda line: None)
    assert [layer["diff_id"] for layer in doc["layers"]] == [f"sha256:{sha(t)}" for t in (empty, BASE, empty)]
    assert doc["layers"][0] == doc["layers"][2]


def test_a_file_where_the_out_dir_should_be_is_bad_input(registry, tmp_path):
    registry.add(REF, [BASE])
    (tmp_path / "out").write_text("")
    with pytest.raises(InputError, match="not a directory"):
        export.export(ROW_OBJ, REF, tmp_path / "out", 48, "gzip", None, lambda line: None)


def test_a_full_disk_is_a_runtime_failure_naming_the_out_dir(registry, tmp_path, monkeypatch):
    registry.add(REF, [BASE])

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "out" / "x"))

    monkeypatch.setattr(export, "carry_layer", full)
    with pytest.raises(RuntimeFailure, match="No space left on device.*free space"):
        export.export(ROW_OBJ, REF, tmp_path / "out", 48, "gzip", None, lambda line: None)
    assert [p.name for p in (tmp_path / "out").iterdir()] == []  # the temp copy is removed


def test_unset_config_fields_are_empty_and_an_inventory_is_summarised(registry, tmp_path):
    registry.add(REF, [BASE], {"Env": None, "Entrypoint": None})
    inv = tmp_path / "inv.json"
    inv.write_bytes(inventory_bytes(INVENTORY))
    doc = export.export(ROW_OBJ, REF, tmp_path / "out", 48, "gzip", inv, lambda line: None)
    check_schema(doc)
    assert doc["config"] == {"Env": [], "WorkingDir": "", "User": "", "Entrypoint": [], "Cmd": []}
    assert doc["labels"] == {} and doc["inventory"] == {"sha256": sha(inv.read_bytes()), "files": len(INVENTORY)}
    assert doc["layers"][0]["thinned_files"] == 2


def test_an_image_the_registry_lacks_says_how_to_get_it(registry, tmp_path):
    with pytest.raises(RuntimeFailure, match="manifest unknown.*build.py build --row"):
        export.export(ROW_OBJ, REF, tmp_path / "out", 48, "gzip", None, lambda line: None)
    assert not (tmp_path / "out").exists()


def test_a_config_whose_diff_ids_do_not_match_the_layers_fails(registry, tmp_path, monkeypatch):
    registry.add(REF, [BASE, TOP])
    original = registry.copy_to_dir

    def tampered(ref, dest, **kw):
        original(ref, dest, **kw)
        tar = dest / sha(TOP)
        tar.write_bytes(tar.read_bytes()[:-512] + b"x" * 512)

    monkeypatch.setattr(skopeo, "copy_to_dir", tampered)
    with pytest.raises(RuntimeFailure, match="rootfs.diff_ids"):
        export.export(ROW_OBJ, REF, tmp_path / "out", 48, "gzip", None, lambda line: None)
    assert not (tmp_path / "out" / "manifest.json").exists()


# --- reuse ---

def test_a_second_row_sharing_a_layer_reuses_its_parts(registry, tmp_path):
    out = tmp_path / "out"
    registry.add(REF, [BASE, TOP])
    first = export.export(ROW_OBJ, REF, out, 1, "gzip", None, lambda line: None)
    part = out / first["layers"][0]["parts"][0]["name"]
    os.utime(part, (1, 1))
    other_top = tar_of([member("other.txt", b"other row\n")])
    other = "127.0.0.1:5000/ns/verl:other"
    registry.add(other, [BASE, other_top])
    lines = []
    second = export.export(types.SimpleNamespace(id="other"), other, out, 1, "gzip", None, lines.append)
    assert second["layers"][0] == first["layers"][0] and part.stat().st_mtime == 1  # not written again
    assert "reused" in lines[1] and "reused" not in lines[2]
    assert second["row"] == "other" and json.loads((out / "manifest.json").read_text()) == second


def test_reuse_is_keyed_on_codec_inventory_and_part_size(registry, tmp_path):
    out = tmp_path / "out"
    registry.add(REF, [SMALL])
    inv = tmp_path / "inv.json"
    inv.write_bytes(inventory_bytes(INVENTORY))
    # the last: parts are named by stream and index, so another part size cuts the same stream again, in place
    runs = [("gzip", None, 1), ("xz", None, 1), ("gzip", inv, 1), ("gzip", None, 1), ("gzip", None, 2)]
    said = []
    for codec, inventory, part_mib in runs:
        lines = []
        export.export(ROW_OBJ, REF, out, part_mib, codec, inventory, lines.append)
        said.append("reused" in lines[1])
    assert said == [False, False, False, True, False]
    assert len(export.read_layers_map(out)) == 4


def test_a_damaged_or_missing_part_is_written_again(registry, tmp_path):
    out = tmp_path / "out"
    registry.add(REF, [BASE])
    first = export.export(ROW_OBJ, REF, out, 1, "gzip", None, lambda line: None)
    parts = first["layers"][0]["parts"]
    damaged = out / parts[1]["name"]
    damaged.write_bytes(b"x" * parts[1]["size"])  # same size, other bytes
    (out / parts[2]["name"]).unlink()
    lines = []
    second = export.export(ROW_OBJ, REF, out, 1, "gzip", None, lines.append)
    assert "reused" not in lines[1] and second == first
    assert sha(damaged.read_bytes()) == parts[1]["sha256"] and (out / parts[2]["name"]).is_file()


@pytest.mark.parametrize("text", ["", "{", "[]", '{"format": "other", "layers": {}}',
                                  '{"format": "imagematrix-export-layers/1", "layers": []}'])
def test_an_unreadable_reuse_map_is_no_map(text, tmp_path):
    (tmp_path / ".layers.json").write_text(text)
    assert export.read_layers_map(tmp_path) == {}


@pytest.mark.parametrize("entry", [
    {},
    {"diff_id": "sha256:" + "1" * 64, "stream": "a" * 64, "stream_size": 1, "parts": []},
    {"diff_id": "sha256:" + "1" * 64, "stream": "a" * 64, "stream_size": 1,
     "parts": [{"name": "../../etc/passwd", "sha256": "b" * 64, "size": 1}]},
    {"diff_id": "sha256:" + "1" * 64, "stream": 5, "stream_size": 1, "parts": [{}]},
    {"diff_id": "sha256:" + "1" * 64, "stream": "a" * 64, "stream_size": "1",
     "parts": [{"name": "a" * 32 + ".gz.000", "sha256": "b" * 64, "size": 1}]},
])
def test_a_malformed_reuse_entry_is_not_reused(entry, tmp_path):
    assert not export.reusable(entry, tmp_path, "sha256:" + "1" * 64, "gzip")


def test_repository_of_strips_tag_and_digest():
    assert export.repository_of("127.0.0.1:5000/ns/verl:tag") == "127.0.0.1:5000/ns/verl"
    assert export.repository_of("127.0.0.1:5000/ns/verl@sha256:" + "a" * 64) == "127.0.0.1:5000/ns/verl"
    assert export.repository_of("127.0.0.1:5000/verl") == "127.0.0.1:5000/verl"
    assert export.repository_of("ghcr.io/me/verl:t@sha256:" + "a" * 64) == "ghcr.io/me/verl"
