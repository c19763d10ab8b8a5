"""Export stage: an image's layers as the carried streams of docs/image-mode.md (`imagematrix-export/1`), for a GPU
host without docker.

    image (registry, or the local daemon) --skopeo--> temp dir: manifest, config, each layer as its uncompressed tar
    each layer: sha256 == config rootfs.diff_ids[i] (else fail) -> thinned against the host inventory (optional)
                -> compressed (gzip level 6 | xz preset 1) -> cut into parts <stream[:32]>.<gz|xz>.<NNN>
    DIR/manifest.json written last, whole or not at all

Thinning (only with an inventory): the tar is rewritten member by member with tarfile (PAX format, streamed: a
member's data is never held in memory, a candidate file is spooled to disk while it is hashed); a regular file of at
least 1 MiB whose sha256 and size are the inventory's becomes a stub: size 0, PAX headers IMAGEMATRIX.sha256 and
IMAGEMATRIX.size, everything else (name, mode, owner, times, other PAX headers) the layer's. Without an inventory the
stream is the layer's tar byte for byte (its sha256 is the diff_id).

Reuse: DIR/.layers.json maps (diff_id, codec, inventory digest, part size) to the layer's entry of an earlier export
into DIR; when every part it names is there with its size and sha256, the layer is not compressed again (rows that
share layers share their parts).

Read from the daemon (`--from daemon`), there is no manifest as a registry serves it: `image` is
`docker-daemon:<ref>` and `manifest_digest` is the image ID (the config's digest) the daemon knows the image by.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from imagematrix.in_image import imagefs
from imagematrix.model import paths
from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.model.matrix import Row
from imagematrix.stages.sizes import human
from imagematrix.tools import skopeo

# The format's names and limits are the GPU host's reader's (in_image/imagefs.py): one definition for both sides.
FORMAT, INVENTORY_FORMAT, CODECS, HEX64 = imagefs.FORMAT, imagefs.INVENTORY_FORMAT, imagefs.CODECS, imagefs.HEX64
PAX_SHA256, PAX_SIZE = imagefs.PAX_SHA, imagefs.PAX_SIZE
LAYERS_FORMAT = "imagematrix-export-layers/1"
MANIFEST = "manifest.json"
LAYERS_MAP = ".layers.json"

MIB = 1 << 20
THIN_MIN = imagefs.MIN_THIN  # smaller files are always carried
INVENTORY_MAX = 64 * MIB
PART_MIB_MIN, PART_MIB_MAX = 1, 60  # a carry is at most 64 MiB together with the repository
DEFAULT_PART_MIB = 48
MAX_PARTS = 1000  # NNN: three digits
GZIP_LEVEL = 6
XZ_PRESET = 1
CHUNK = MIB

PART_NAME = re.compile(r"([0-9a-f]{32})\.(gz|xz)\.(\d{3})")
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")


# --- inputs ---

@dataclass(frozen=True)
class Inventory:
    """The host's file digests (sha256 hex -> size) and the sha256 of the inventory file itself."""

    sha256: str
    files: dict[str, int]

    def summary(self) -> dict:
        return {"sha256": self.sha256, "files": len(self.files)}


def parse_inventory(data: bytes, where: str) -> Inventory:
    """The inventory file's bytes, checked strictly (it comes from another machine): an InputError naming `where`."""

    def bad(message: str) -> InputError:
        return InputError(message, where=where, fix="write it again on the GPU host with "
                          "`python3 imagematrix/in_image/imagefs.py inventory --out host-inventory.json`")

    if len(data) > INVENTORY_MAX:
        raise bad(f"{len(data)} bytes: an inventory is at most {INVENTORY_MAX // MIB} MiB")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad(f"not JSON: {str(exc)[:200]}") from None
    if not isinstance(doc, dict):
        raise bad(f"the top level is a {type(doc).__name__}, not an object")
    if doc.get("format") != INVENTORY_FORMAT:
        raise bad(f"format {str(doc.get('format'))[:80]!r}, expected {INVENTORY_FORMAT!r}")
    files = doc.get("files")
    if not isinstance(files, dict):
        raise bad(f"'files' is {type(files).__name__}, not an object of sha256 hex -> size")
    for key, size in files.items():
        if not HEX64.fullmatch(key):
            raise bad(f"files: key {key[:80]!r} is not a sha256 (64 lowercase hex digits)")
        if type(size) is not int or size < 0:
            raise bad(f"files[{key}]: size {str(size)[:40]!r} is not a non-negative integer")
    return Inventory(hashlib.sha256(data).hexdigest(), dict(files))


def load_inventory(path: Path) -> Inventory:
    """--inventory FILE, read at most INVENTORY_MAX + 1 bytes (a huge file is refused, never read whole)."""
    try:
        with open(path, "rb") as f:
            data = f.read(INVENTORY_MAX + 1)
    except OSError as exc:
        raise InputError(f"cannot read the inventory: {exc.strerror or exc}", where=str(path),
                         fix="pass the host-inventory.json that `imagefs.py inventory` wrote on the GPU host") from None
    return parse_inventory(data, str(path))


def check_part_mib(value: int) -> int:
    if not PART_MIB_MIN <= value <= PART_MIB_MAX:
        raise InputError(f"--part-mib {value}: a part is {PART_MIB_MIN} to {PART_MIB_MAX} MiB, since a carry is at "
                         "most 64 MiB together with the repository",
                         fix=f"pass --part-mib between {PART_MIB_MIN} and {PART_MIB_MAX} (default {DEFAULT_PART_MIB})")
    return value


def check_codec(codec: str) -> str:
    if codec not in CODECS:
        raise InputError(f"--codec {codec!r}: one of {', '.join(CODECS)}")
    return codec


# --- streams: hashing, compressing, cutting into parts ---

class HashingReader:
    """A read-only file that hashes (sha256) and counts every byte read through it."""

    def __init__(self, raw: BinaryIO):
        self.raw, self.hash, self.size = raw, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.hash.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


@dataclass(frozen=True)
class Part:
    name: str
    sha256: str
    size: int

    def entry(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "size": self.size}


def part_name(stream: str, codec: str, index: int) -> str:
    return f"{stream[:32]}.{CODECS[codec]}.{index:03d}"


class PartWriter:
    """A write-only file that cuts what is written into files of at most part_size bytes in `work` (part-NNN),
    hashing each one and the whole stream; finish() names them by the stream's digest."""

    def __init__(self, work: Path, part_size: int):
        self.work, self.part_size = work, part_size
        self.stream, self.size = hashlib.sha256(), 0
        self.done: list[tuple[Path, str, int]] = []  # (file, sha256, size)
        self._file: BinaryIO | None = None
        self._hash = hashlib.sha256()
        self._left = 0

    def _next(self) -> None:
        self._close_part()
        if len(self.done) >= MAX_PARTS:
            raise InputError(f"a layer's stream needs more than {MAX_PARTS} parts of {self.part_size // MIB} MiB "
                             "(part names have three digits)", fix="pass a larger --part-mib")
        self._file = open(self.work / f"part-{len(self.done):03d}", "wb")
        self._hash, self._left = hashlib.sha256(), self.part_size

    def _close_part(self) -> None:
        if self._file is not None:
            self._file.close()
            self.done.append((Path(self._file.name), self._hash.hexdigest(), self.part_size - self._left))
            self._file = None

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        self.stream.update(view)
        self.size += len(view)
        while view:
            if self._file is None or not self._left:
                self._next()
            piece = view[:self._left]
            self._file.write(piece)
            self._hash.update(piece)
            self._left -= len(piece)
            view = view[len(piece):]
        return len(data)

    def flush(self) -> None:
        pass

    def finish(self, codec: str) -> tuple[str, list[tuple[Path, Part]]]:
        """(stream digest hex, [(the part's file in work, the part as the manifest names it)])."""
        self._close_part()
        digest = self.stream.hexdigest()
        return digest, [(path, Part(part_name(digest, codec, i), sha, size)) for i, (path, sha, size) in enumerate(self.done)]


def compressor(codec: str, raw: PartWriter) -> BinaryIO:
    """A writer compressing into raw: gzip level 6 (no name, mtime 0: the same tar gives the same stream) or xz
    preset 1."""
    if codec == "gzip":
        return gzip.GzipFile(filename="", mode="wb", compresslevel=GZIP_LEVEL, fileobj=raw, mtime=0)
    return lzma.LZMAFile(raw, "wb", format=lzma.FORMAT_XZ, preset=XZ_PRESET)


def _copy(src, dst, hasher=None) -> None:
    while chunk := src.read(CHUNK):
        if hasher is not None:
            hasher.update(chunk)
        dst.write(chunk)


# --- thinning ---

@dataclass
class Thinned:
    files: int = 0
    bytes: int = 0


def stub(member: tarfile.TarInfo, sha256: str) -> tarfile.TarInfo:
    """member as a stub: a regular file of size 0 carrying its digest and size in PAX headers, all else kept."""
    out = copy.copy(member)
    out.type = tarfile.REGTYPE
    out.size = 0
    out.sparse = None
    headers = {k: v for k, v in member.pax_headers.items() if k != "size"}  # a PAX size would outweigh the 0
    headers[PAX_SHA256] = sha256
    headers[PAX_SIZE] = str(member.size)
    out.pax_headers = headers
    return out


def thin(src, dst, files: dict[str, int], spool_dir: Path) -> Thinned:
    """Rewrite the tar stream src into dst (PAX), each regular file >= 1 MiB whose sha256 and size are in `files`
    replaced by its stub(); every other member as it was (its data streamed, never held in memory)."""
    sizes = {size for size in files.values() if size >= THIN_MIN}
    done = Thinned()
    try:
        tin = tarfile.open(fileobj=src, mode="r|")
    except tarfile.ReadError as exc:
        raise RuntimeFailure(f"not a tar stream: {exc}") from None
    with tin, tarfile.open(fileobj=dst, mode="w|", format=tarfile.PAX_FORMAT) as tout:
        for member in tin:
            if member.issparse():
                raise RuntimeFailure(f"{member.name!r} is a sparse file: export cannot carry sparse tar members")
            if member.isreg() and member.size >= THIN_MIN and member.size in sizes:
                with tempfile.TemporaryFile(dir=spool_dir) as spool:
                    hasher = hashlib.sha256()
                    _copy(tin.extractfile(member), spool, hasher)
                    digest = hasher.hexdigest()
                    if files.get(digest) == member.size:
                        tout.addfile(stub(member, digest))
                        done.files += 1
                        done.bytes += member.size
                    else:
                        spool.seek(0)
                        tout.addfile(member, spool)
            elif member.isreg() or member.type not in tarfile.SUPPORTED_TYPES:  # a member with data
                tout.addfile(member, tin.extractfile(member))
            else:
                tout.addfile(member)
    return done


# --- the reuse map ---

def reuse_key(diff_id: str, codec: str, inventory: Inventory | None, part_size: int) -> str:
    return f"{diff_id} {codec} {inventory.sha256 if inventory else '-'} {part_size}"


def read_layers_map(out_dir: Path) -> dict[str, dict]:
    """DIR/.layers.json: key -> layer entry; an unreadable or odd map is no map (every entry is checked on use)."""
    try:
        doc = json.loads((out_dir / LAYERS_MAP).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict) or doc.get("format") != LAYERS_FORMAT or not isinstance(doc.get("layers"), dict):
        return {}
    return {k: v for k, v in doc["layers"].items() if isinstance(k, str) and isinstance(v, dict)}


def write_layers_map(out_dir: Path, layers: dict[str, dict]) -> None:
    paths.write_atomic(out_dir / LAYERS_MAP, json.dumps({"format": LAYERS_FORMAT, "layers": layers}, indent=1,
                                                        sort_keys=True) + "\n")


def reusable(entry: dict, out_dir: Path, diff_id: str, codec: str) -> bool:
    """entry (from the map) is a well-formed layer entry for diff_id and codec whose every part is in out_dir with
    its size and sha256."""
    try:
        stream, parts = entry["stream"], entry["parts"]
        if entry["diff_id"] != diff_id or not HEX64.fullmatch(stream) or not isinstance(parts, list) or not parts:
            return False
        if sum(p["size"] for p in parts) != entry["stream_size"]:
            return False
        for i, part in enumerate(parts):
            if part["name"] != part_name(stream, codec, i) or not HEX64.fullmatch(part["sha256"]):
                return False
            path = out_dir / part["name"]
            if not path.is_file() or path.stat().st_size != part["size"] or paths.file_sha256(path) != part["sha256"]:
                return False
    except (KeyError, TypeError):
        return False
    return True


# --- one layer ---

def carry_layer(layer_file: Path, diff_id: str, *, codec: str, part_size: int, inventory: Inventory | None,
                work: Path, out_dir: Path) -> dict:
    """The layer tar at layer_file as a stream of parts in out_dir: its manifest entry. The tar's sha256 must be
    diff_id (checked over the bytes the stream was made of); no part is left in out_dir when it is not."""
    parts_dir = Path(tempfile.mkdtemp(prefix="parts-", dir=work))
    writer = PartWriter(parts_dir, part_size)
    with open(layer_file, "rb") as raw:
        head = raw.read(6)
        raw.seek(0)
        if head[:2] == b"\x1f\x8b" or head == b"\xfd7zXZ\x00" or head[:4] == b"\x28\xb5\x2f\xfd":
            raise RuntimeFailure(f"layer {diff_id} was left compressed by skopeo (--dest-decompress): cannot "
                                 "check its diff_id")
        reader = HashingReader(raw)
        packed = compressor(codec, writer)
        if inventory is None:
            _copy(reader, packed)
            thinned = Thinned()
        else:
            thinned = thin(reader, packed, inventory.files, work)
            reader.drain()  # what follows the end-of-archive blocks is part of the diff_id too
        packed.close()
    stream, parts = writer.finish(codec)
    if f"sha256:{reader.hash.hexdigest()}" != diff_id:
        shutil.rmtree(parts_dir, ignore_errors=True)
        raise RuntimeFailure(f"layer tar {layer_file.name} has sha256:{reader.hash.hexdigest()}, but the config's "
                             f"rootfs.diff_ids says {diff_id}: the image is corrupt or was changed while read; "
                             "fix: export it again, or rebuild and push the image")
    for path, part in parts:
        target = out_dir / part.name
        if target.is_file() and target.stat().st_size == part.size and paths.file_sha256(target) == part.sha256:
            path.unlink()
        else:
            os.replace(path, target)
    shutil.rmtree(parts_dir, ignore_errors=True)
    return {"diff_id": diff_id, "size": reader.size, "stream": stream, "stream_size": writer.size,
            "thinned_files": thinned.files, "thinned_bytes": thinned.bytes,
            "parts": [part.entry() for _, part in parts]}


# --- the image ---

def repository_of(ref: str) -> str:
    """host[:port]/name[:tag][@digest] -> host[:port]/name."""
    name = ref.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name[: len(name) - len(last)] + last.split(":", 1)[0]


def _json(data: bytes, what: str) -> dict:
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise RuntimeFailure(f"{what} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise RuntimeFailure(f"{what} is not a JSON object")
    return doc


def registry_manifest(ref: str) -> tuple[str, dict]:
    """(REPO@sha256:D, the manifest) of the image at ref, D the sha256 of the manifest bytes the registry serves;
    an index (a multi-platform image, or buildx's with attestations) gives its linux/amd64 image."""
    raw = skopeo.inspect_raw(ref)
    doc = _json(raw, f"the manifest of {ref}")
    repo = repository_of(ref)
    if doc.get("mediaType") in INDEX_TYPES or "manifests" in doc:
        chosen = [m for m in doc.get("manifests") or [] if isinstance(m, dict)
                  and (m.get("platform") or {}).get("os") == "linux"
                  and (m.get("platform") or {}).get("architecture") == "amd64"]
        if not chosen:
            raise RuntimeFailure(f"{ref} is an image index without a linux/amd64 image; fix: export a "
                                 "single-platform image, or the amd64 one by digest")
        digest = chosen[0].get("digest", "")
        raw = skopeo.inspect_raw(f"{repo}@{digest}")
        if f"sha256:{hashlib.sha256(raw).hexdigest()}" != digest:
            raise RuntimeFailure(f"the registry served {repo}@{digest} with another digest")
        doc = _json(raw, f"the manifest of {repo}@{digest}")
    if doc.get("schemaVersion") != 2 or not isinstance(doc.get("config"), dict):
        raise RuntimeFailure(f"{ref}: not an image manifest of schema 2 (mediaType {doc.get('mediaType')!r})")
    return f"{repo}@sha256:{hashlib.sha256(raw).hexdigest()}", doc


def _config_summary(config: dict) -> tuple[dict, dict]:
    c = config.get("config") or {}
    summary = {"Env": list(c.get("Env") or []), "WorkingDir": c.get("WorkingDir") or "", "User": c.get("User") or "",
               "Entrypoint": list(c.get("Entrypoint") or []), "Cmd": list(c.get("Cmd") or [])}
    return summary, dict(c.get("Labels") or {})


def _blob(copy_dir: Path, digest: str) -> Path:
    hex_ = digest.removeprefix("sha256:")
    for name in (hex_, f"{hex_}.tar"):
        if (copy_dir / name).is_file():
            return copy_dir / name
    raise RuntimeFailure(f"skopeo's copy in {copy_dir} has no blob {digest}")


def _sweep(out_dir: Path) -> None:
    """Remove temp dirs a killed export left in out_dir (.export-<pid>-*, that pid gone)."""
    for old in out_dir.glob(".export-*-*"):
        match = re.fullmatch(r"\.export-(\d+)-.*", old.name)
        if not match or not old.is_dir():
            continue
        try:
            os.kill(int(match.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(old, ignore_errors=True)
        except PermissionError:
            pass


def export(row: Row, image_ref: str, out_dir: Path, part_mib: int, codec: str, inventory_path: Path | None,
           progress: Callable[[str], None], *, daemon: bool = False) -> dict:
    """Export image_ref (the registry's, or the local daemon's with `daemon`) into out_dir as docs/image-mode.md
    describes; returns the manifest written to out_dir/manifest.json."""
    check_part_mib(part_mib)
    check_codec(codec)
    inventory = load_inventory(inventory_path) if inventory_path is not None else None
    part_size = part_mib * MIB
    if daemon:
        source, manifest_doc = image_ref, None
    else:
        try:
            source, manifest_doc = registry_manifest(image_ref)
        except RuntimeFailure as exc:
            raise RuntimeFailure(f"{exc}; fix: push the row's image (build.py build --row {row.id}), or pass "
                                 "--image REF, or --from daemon for a local one") from None
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} is not a directory", fix="pass a directory (it is created when absent)")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        _sweep(out_dir)
        work = Path(tempfile.mkdtemp(prefix=f".export-{os.getpid()}-", dir=out_dir))
    except OSError as exc:
        raise RuntimeFailure(f"--out {out_dir}: cannot write there: {exc.strerror or exc}") from None
    try:
        return _export(row, image_ref, source, manifest_doc, out_dir, work, codec, part_size, inventory, progress,
                       daemon)
    except OSError as exc:  # a full disk, mostly: the copy is as large as the image's layers, uncompressed
        where = exc.filename or out_dir
        raise RuntimeFailure(f"export into {out_dir} failed at {where}: {exc.strerror or exc}; fix: free space "
                             "there (the image's uncompressed layers pass through it) or pass another --out") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _copy_checked(image_ref: str, source: str, manifest_doc: dict | None, copy_dir: Path,
                  daemon: bool) -> tuple[str, dict, list[str], list[str]]:
    """skopeo's copy of the image in copy_dir, checked: (config digest, config, layer digests, diff_ids)."""
    skopeo.copy_to_dir(source, copy_dir, decompress=True, daemon=daemon)
    local = _json((copy_dir / "manifest.json").read_bytes(), f"skopeo's manifest of {image_ref}")
    config_digest = (local.get("config") or {}).get("digest", "")
    if manifest_doc is not None and manifest_doc["config"].get("digest") != config_digest:
        raise RuntimeFailure(f"{source}: skopeo copied config {config_digest}, the manifest names "
                             f"{manifest_doc['config'].get('digest')}")
    config_file = _blob(copy_dir, config_digest)
    if f"sha256:{paths.file_sha256(config_file)}" != config_digest:
        raise RuntimeFailure(f"{source}: the config blob does not have its digest {config_digest}")
    config = _json(config_file.read_bytes(), f"the config of {image_ref}")
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    layers = local.get("layers") or []
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) and d.startswith("sha256:")
                                                 and HEX64.fullmatch(d[7:]) for d in diff_ids):
        raise RuntimeFailure(f"{source}: its config's rootfs.diff_ids is not a list of sha256 digests")
    if not isinstance(layers, list) or len(diff_ids) != len(layers):
        raise RuntimeFailure(f"{source}: {len(layers)} layers but {len(diff_ids)} rootfs.diff_ids in its config")
    digests = [layer.get("digest", "") if isinstance(layer, dict) else "" for layer in layers]
    return config_digest, config, digests, diff_ids


def _export(row: Row, image_ref: str, source: str, manifest_doc: dict | None, out_dir: Path, work: Path, codec: str,
            part_size: int, inventory: Inventory | None, progress: Callable[[str], None], daemon: bool) -> dict:
    progress(f"copying {image_ref} from the Docker daemon" if daemon else f"copying {source}")
    copy_dir = work / "image"
    config_digest, config, digests, diff_ids = _copy_checked(image_ref, source, manifest_doc, copy_dir, daemon)
    summary, labels = _config_summary(config)

    reuse = read_layers_map(out_dir)
    entries = []
    for i, (digest, diff_id) in enumerate(zip(digests, diff_ids, strict=True), 1):
        started = time.monotonic()
        layer_file = _blob(copy_dir, digest)
        key = reuse_key(diff_id, codec, inventory, part_size)
        cached = reuse.get(key)
        if cached is not None and reusable(cached, out_dir, diff_id, codec):
            with open(layer_file, "rb") as f:
                reader = HashingReader(f)
                reader.drain()
            if f"sha256:{reader.hash.hexdigest()}" != diff_id:
                raise RuntimeFailure(f"layer {i} of {source} does not have its diff_id {diff_id}: the image is "
                                     "corrupt; fix: export it again, or rebuild and push the image")
            entry, how = cached, "reused"
        else:
            entry = carry_layer(layer_file, diff_id, codec=codec, part_size=part_size, inventory=inventory,
                                work=work, out_dir=out_dir)
            reuse[key] = entry
            write_layers_map(out_dir, reuse)
            how = f"{len(entry['parts'])} part(s)"
        if digest not in digests[i:]:  # an image may hold one layer twice (an empty one, say)
            layer_file.unlink()  # the disk it held is free for the next layer's parts
        progress(f"layer {i}/{len(digests)}: {human(entry['size'])} -> {human(entry['stream_size'])} {codec}, "
                 f"{entry['thinned_files']} thinned ({human(entry['thinned_bytes'])}), {how}, "
                 f"{time.monotonic() - started:.1f} s")
        entries.append(entry)

    manifest = {
        "format": FORMAT, "row": row.id,
        "image": f"docker-daemon:{image_ref}" if daemon else image_ref,
        "manifest_digest": config_digest if daemon else source.rsplit("@", 1)[1],
        "config_digest": config_digest, "config": summary, "labels": labels, "codec": codec,
        "part_size": part_size, "inventory": inventory.summary() if inventory else None, "layers": entries,
    }
    paths.write_atomic(out_dir / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return manifest
