"""imagefs (the GPU host's side of `build.py export`): layers applied in order with OCI whiteouts, paths kept inside
the root, thinned files taken from the host's own files by digest, parts checked before they are kept or read."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from imagematrix.in_image import imagefs


def _tar(entries: list[tuple]) -> bytes:
    """A layer tar from (kind, name, payload) entries: kind is file, dir, sym, link, stub."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for kind, name, payload in entries:
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid = 1_700_000_000, 0, 0
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, payload
                tar.addfile(info)
            elif kind == "link":
                info.type, info.linkname = tarfile.LNKTYPE, payload
                tar.addfile(info)
            elif kind == "stub":
                digest, size = payload
                info.size, info.mode = 0, 0o644
                info.pax_headers = {imagefs.PAX_SHA: digest, imagefs.PAX_SIZE: str(size)}
                tar.addfile(info, io.BytesIO(b""))
            else:
                info.size, info.mode = len(payload), 0o644
                tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def _export(folder: Path, layers: list[bytes], part_size: int = 1 << 20, thinned: bool = False) -> dict:
    """What `build.py export` writes, for these layer tars (gzip, cut into parts)."""
    manifest = {"format": imagefs.FORMAT, "row": "r", "image": "test", "codec": "gzip",
                "manifest_digest": "sha256:" + "a" * 64, "config_digest": "sha256:" + "b" * 64,
                "config": {"Env": ["PATH=/usr/bin"], "WorkingDir": "/", "User": ""}, "labels": {},
                "part_size": part_size, "inventory": None, "layers": []}
    for tar in layers:
        stream = gzip.compress(tar, mtime=0)
        digest = hashlib.sha256(stream).hexdigest()
        parts = []
        for i in range(0, len(stream), part_size):
            chunk = stream[i:i + part_size]
            name = f"{digest[:32]}.gz.{len(parts):03d}"
            (folder / name).write_bytes(chunk)
            parts.append({"name": name, "sha256": hashlib.sha256(chunk).hexdigest(), "size": len(chunk)})
        manifest["layers"].append({"diff_id": "sha256:" + hashlib.sha256(tar).hexdigest(), "size": len(tar),
                                   "stream": digest, "stream_size": len(stream), "parts": parts,
                                   "thinned_files": 1 if thinned else 0, "thinned_bytes": 0})
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def _unpack(tmp_path: Path, layers: list[bytes], sites: list[str] | None = None, **kw) -> Path:
    carried, store = tmp_path / "carried", tmp_path / "store"
    carried.mkdir()
    manifest = _export(carried, layers, **kw)
    imagefs.stash(str(carried), manifest, str(store))
    rootfs = tmp_path / "work" / "rootfs"
    rootfs.parent.mkdir()
    imagefs.unpack(manifest, str(store), str(rootfs), sites or [], log=lambda _line: None)
    return rootfs


def test_whiteouts_delete_what_lower_layers_made_and_keep_what_their_own_layer_made(tmp_path):
    lower = _tar([("dir", "a", None), ("file", "a/x", b"x"), ("file", "a/y", b"y"), ("dir", "b", None),
                  ("file", "b/z", b"z"), ("dir", "b/sub", None), ("file", "b/sub/deep", b"d"), ("file", "c", b"c"),
                  ("dir", "usr", None), ("dir", "usr/lib", None), ("sym", "lib", "usr/lib"),
                  ("file", "usr/lib/f", b"f")])
    upper = _tar([("file", "a/.wh.x", b""), ("file", ".wh.c", b""), ("dir", "b", None),
                  ("file", "b/new", b"new"), ("file", "b/.wh..wh..opq", b""), ("file", "lib/g", b"g")])
    root = _unpack(tmp_path, [lower, upper])
    assert not (root / "a/x").exists() and (root / "a/y").read_bytes() == b"y"
    assert not (root / "c").exists()
    assert sorted(os.listdir(root / "b")) == ["new"]  # the opaque whiteout kept only this layer's entry
    assert (root / "lib").is_symlink() and (root / "usr/lib/g").read_bytes() == b"g"  # written through the link
    assert not any(name.startswith(".wh.") for _, _, files in os.walk(root) for name in files)


def test_the_root_entry_of_a_tar_made_with_dot_is_the_root_itself(tmp_path):
    root = _unpack(tmp_path, [_tar([("dir", "./", None), ("dir", "./etc", None), ("file", "./etc/os", b"x")])])
    assert (root / "etc/os").read_bytes() == b"x"


def test_a_later_layer_replaces_a_file_by_a_directory_and_a_link_by_a_file(tmp_path):
    root = _unpack(tmp_path, [_tar([("file", "p", b"1"), ("sym", "q", "p")]),
                              _tar([("dir", "p", None), ("file", "p/in", b"2"), ("file", "q", b"3")])])
    assert (root / "p").is_dir() and (root / "p/in").read_bytes() == b"2"
    assert not (root / "q").is_symlink() and (root / "q").read_bytes() == b"3"


def test_symlinks_never_lead_a_write_out_of_the_root(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    layer = _tar([("sym", "abs", "/"), ("sym", "up", "../../../.."), ("sym", "host", str(outside)),
                  ("file", "abs/etc-file", b"1"), ("file", "up/up-file", b"2"), ("file", "host/host-file", b"3"),
                  ("file", "/leading-slash", b"4")])
    root = _unpack(tmp_path, [layer])
    assert (root / "etc-file").read_bytes() == b"1" and (root / "up-file").read_bytes() == b"2"
    assert (root / str(outside).lstrip("/") / "host-file").read_bytes() == b"3"
    assert (root / "leading-slash").read_bytes() == b"4"
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["carried", "outside", "store", "work"]


@pytest.mark.parametrize("name", ["../escape", "a/../../escape", "a/b/../../../escape"])
def test_an_entry_naming_a_parent_folder_is_refused(tmp_path, name):
    with pytest.raises(imagefs.Failed, match="not a plain path"):
        _unpack(tmp_path, [_tar([("file", name, b"x")])])
    assert not (tmp_path / "escape").exists() and not (tmp_path / "work" / "rootfs").exists()


def test_hardlinks_point_at_the_file_inside_the_root(tmp_path):
    root = _unpack(tmp_path, [_tar([("dir", "d", None), ("file", "d/f", b"data"), ("link", "d/g", "d/f")])])
    assert os.stat(root / "d/f").st_ino == os.stat(root / "d/g").st_ino


def _site(tmp_path: Path, content: bytes) -> tuple[str, str]:
    site = tmp_path / "site"
    (site / "pkg-1.0.dist-info").mkdir(parents=True)
    (site / "pkg").mkdir()
    (site / "pkg" / "big.so").write_bytes(content)
    digest = hashlib.sha256(content).digest()
    b64 = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    (site / "pkg-1.0.dist-info" / "RECORD").write_text(f"pkg/big.so,sha256={b64},{len(content)}\n"
                                                       "pkg/small.py,sha256=abc,3\npkg-1.0.dist-info/RECORD,,\n")
    return str(site), digest.hex()


def test_a_thinned_file_is_copied_from_the_host_file_of_its_digest(tmp_path):
    content = os.urandom(imagefs.MIN_THIN + 5)
    site, digest = _site(tmp_path, content)
    assert imagefs.inventory([site])["files"] == {digest: len(content)}
    root = _unpack(tmp_path, [_tar([("dir", "opt", None), ("stub", "opt/big.so", (digest, len(content)))])],
                   sites=[site], thinned=True)
    assert (root / "opt/big.so").read_bytes() == content


def test_a_host_file_that_differs_from_its_record_is_not_taken(tmp_path):
    content = os.urandom(imagefs.MIN_THIN + 5)
    site, digest = _site(tmp_path, content)
    Path(site, "pkg", "big.so").write_bytes(b"\0" + content[1:])  # changed after its RECORD was written
    with pytest.raises(imagefs.Failed, match="changed since its RECORD"):
        _unpack(tmp_path, [_tar([("stub", "big.so", (digest, len(content)))])], sites=[site], thinned=True)


def test_a_thinned_file_the_host_lacks_fails_saying_how_to_export(tmp_path):
    with pytest.raises(imagefs.Failed, match="without --inventory"):
        _unpack(tmp_path, [_tar([("stub", "big.so", ("c" * 64, 5))])], thinned=True)


def test_stash_refuses_a_damaged_part_and_missing_names_what_is_still_to_carry(tmp_path):
    carried, store = tmp_path / "carried", tmp_path / "store"
    carried.mkdir()
    manifest = _export(carried, [_tar([("file", "f", os.urandom(3000))])], part_size=1000)
    names = sorted(imagefs.parts_of(manifest))
    assert len(names) >= 3
    os.unlink(carried / names[0])
    (carried / names[1]).write_bytes(b"\0" + (carried / names[1]).read_bytes()[1:])
    with pytest.raises(imagefs.BadInput, match=names[1]):
        imagefs.stash(str(carried), manifest, str(store))
    assert names[1] not in os.listdir(store)
    assert set(imagefs.missing(manifest, str(store))) == {names[0], names[1]}


def test_a_part_damaged_in_the_store_stops_the_unpack(tmp_path):
    carried, store = tmp_path / "carried", tmp_path / "store"
    carried.mkdir()
    manifest = _export(carried, [_tar([("file", "f", os.urandom(3000))])], part_size=1000)
    imagefs.stash(str(carried), manifest, str(store))
    name = manifest["layers"][0]["parts"][1]["name"]
    data = (store / name).read_bytes()
    (store / name).write_bytes(bytes([data[0] ^ 1]) + data[1:])
    rootfs = tmp_path / "rootfs"
    with pytest.raises(imagefs.Failed, match="does not match its sha256"):
        imagefs.unpack(manifest, str(store), str(rootfs), [], log=lambda _line: None)
    assert not rootfs.exists() and not (tmp_path / imagefs.DONE).exists()


def test_an_unpacked_image_is_not_unpacked_again(tmp_path):
    root = _unpack(tmp_path, [_tar([("file", "f", b"1")])])
    manifest = imagefs.load_manifest(str(tmp_path / "carried" / "manifest.json"))
    (root / "f").write_bytes(b"changed")
    assert imagefs.unpack(manifest, str(tmp_path / "store"), str(root), [])["reused"] is True


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(format="other/1"), "not an imagematrix-export/1"),
    (lambda m: m.update(manifest_digest="sha256:abc\n"), "manifest_digest"),
    (lambda m: m.update(codec="zstd"), "codec"),
    (lambda m: m["config"].update(Env="PATH=/x"), "config.Env"),
    (lambda m: m["layers"][0].update(stream="../" + "a" * 61), "stream"),
    (lambda m: m["layers"][0]["parts"][0].update(name="../../etc/passwd"), "name is not"),
    (lambda m: m["layers"][0]["parts"][0].update(size="1"), "size"),
    (lambda m: m.update(layers=[]), "layers"),
])
def test_a_hostile_manifest_is_refused_naming_the_field(tmp_path, change, message):
    manifest = _export(tmp_path, [_tar([("file", "f", b"1")])])
    change(manifest)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(manifest))
    with pytest.raises(imagefs.BadInput, match=message):
        imagefs.load_manifest(str(path))


def test_the_command_line_exits_2_on_a_manifest_that_is_not_json(tmp_path, capsys):
    path = tmp_path / "m.json"
    path.write_bytes(b"\xff[")
    assert imagefs.main(["missing", "--manifest", str(path), "--store", str(tmp_path)]) == 2
    assert "not a JSON manifest" in capsys.readouterr().err


def test_a_partial_tree_takes_only_the_lowest_layers_and_needs_only_their_parts(tmp_path):
    carried, store = tmp_path / "carried", tmp_path / "store"
    carried.mkdir()
    manifest = _export(carried, [_tar([("file", "os", b"1")]), _tar([("file", "rest", b"2")])])
    upper = manifest["layers"][1]["parts"][0]["name"]
    os.unlink(carried / upper)  # the upper layer is not carried yet
    imagefs.stash(str(carried), manifest, str(store))
    root = tmp_path / "partial"
    imagefs.unpack(manifest, str(store), str(root), [], log=lambda _line: None, layers=1)
    assert (root / "os").exists() and not (root / "rest").exists()
    with pytest.raises(imagefs.Failed, match="lacks 1 part"):
        imagefs.unpack(manifest, str(store), str(tmp_path / "whole"), [], log=lambda _line: None)
    with pytest.raises(imagefs.BadInput, match="has 2 layers"):
        imagefs.unpack(manifest, str(store), str(root), [], layers=3)
