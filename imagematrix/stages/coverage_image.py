"""The device code of a whole image, read from its layers without running it (issue 28, item 1).

    registry (127.0.0.1:5000/imagematrix/verl:<row>)  manifest + config -> each layer blob, streamed and gunzipped
    docker daemon (an image just built)                 `docker save` -> each layer tar, streamed
        each layer tar, member by member (never unpacked):
            not a regular file, or its first bytes not an ELF header -> skipped (the tar stream moves on)
            an ELF: copied to one scratch file while its bytes are searched for the names `.nv_fatbin` /
                    `__nv_relfatbin`; where found, its section headers are read (bounded): a shared object with
                    such a section, or a cubin (an ELF for EM_CUDA, flashinfer's kernels), goes to
                    stages/coverage.read_one (cuobjdump, cached per file sha256)
        a layer's answer is cached by its diff_id (the sha256 of its uncompressed tar): a layer shared by rows, or
        scanned before, is not read again; an image whose layers are all cached is answered from the cache alone
    the layers merged bottom up with their whiteouts: the image's final files with device code

Caps: a member over MAX_FILE bytes is not read (listed as unread, with the reason); ELF section tables over
MAX_SECTIONS entries or a string table over MAX_SHSTRTAB bytes are not trusted (the file goes to cuobjdump, which
decides); a registry blob has http.BLOB_LIMIT and BLOB_DEADLINE, `docker save` SAVE_DEADLINE.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import posixpath
import re
import struct
import tarfile
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from imagematrix.model import paths
from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.stages import coverage
from imagematrix.tools import docker, registry

LAYER_CACHE_VERSION = 2  # bump when what a layer's scan finds changes (2: fatbin headers read where cuobjdump fails)
MAX_FILE = 4 << 30  # a member larger than this is not read (the largest here: libtorch_cuda.so 2.5.1, 0.9 GB)
MAX_SECTIONS = 65535
MAX_SHSTRTAB = 16 << 20
SAVE_DEADLINE = 3600.0
CHUNK = 1 << 20
MARKERS = (b".nv_fatbin", b"__nv_relfatbin")
EM_CUDA = 190
HEX64 = re.compile(r"[0-9a-f]{64}")
GZIP_MEDIA = ("application/vnd.docker.image.rootfs.diff.tar.gzip", "application/vnd.oci.image.layer.v1.tar+gzip")
TAR_MEDIA = ("application/vnd.oci.image.layer.v1.tar",)


@dataclass(frozen=True)
class FileCoverage:
    sha256: str
    size: int
    kind: str  # "so" (a host ELF with a fatbin section) or "cubin" (a device ELF on its own)
    sass: tuple[str, ...]
    ptx: tuple[str, ...]

    @property
    def coverage(self) -> coverage.Coverage:
        return frozenset(self.sass), frozenset(self.ptx)

    def to_json(self) -> dict:
        return {"sha256": self.sha256, "size": self.size, "kind": self.kind, "sass": list(self.sass),
                "ptx": list(self.ptx)}

    @classmethod
    def from_json(cls, doc: dict) -> FileCoverage:
        sass, ptx = tuple(doc["sass"]), tuple(doc["ptx"])
        if not all(isinstance(a, str) and coverage._ARCH_RE.match(a) for a in (*sass, *ptx)):
            raise ValueError("an architecture that is not sm_XY / compute_XY")
        if not isinstance(doc["sha256"], str) or not HEX64.fullmatch(doc["sha256"]) or doc["kind"] not in ("so", "cubin"):
            raise ValueError("a file entry without a sha256 or kind")
        return cls(doc["sha256"], int(doc["size"]), doc["kind"], sass, ptx)


@dataclass
class LayerScan:
    """What one layer holds: its ELF files (None: no device code), whiteouts, opaque folders, unread files."""

    elf: dict[str, FileCoverage | None] = field(default_factory=dict)
    whiteouts: list[str] = field(default_factory=list)
    opaque: list[str] = field(default_factory=list)
    unread: dict[str, str] = field(default_factory=dict)  # path -> why
    stats: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"format": LAYER_CACHE_VERSION, "whiteouts": self.whiteouts, "opaque": self.opaque,
                "unread": self.unread, "elf": sorted(p for p, c in self.elf.items() if c is None),
                "device": {p: c.to_json() for p, c in sorted(self.elf.items()) if c is not None}}

    @classmethod
    def from_json(cls, doc: dict) -> LayerScan:
        if doc.get("format") != LAYER_CACHE_VERSION:
            raise ValueError("another format")
        elf: dict[str, FileCoverage | None] = {str(p): None for p in doc["elf"]}
        elf.update({str(p): FileCoverage.from_json(c) for p, c in doc["device"].items()})
        return cls(elf, [str(p) for p in doc["whiteouts"]], [str(p) for p in doc["opaque"]],
                   {str(k): str(v) for k, v in doc["unread"].items()})


@dataclass
class ImageScan:
    image: str
    files: dict[str, FileCoverage]  # the final filesystem's files with device code, by path
    unread: dict[str, str]
    layers: int
    cached_layers: int
    seconds: float
    cuobjdump_runs: int = 0


# --- one ELF ---------------------------------------------------------------------------------------------------

def elf_kind(head: bytes) -> str | None:
    """'so' for a little-endian 64-bit ELF of the host, 'cubin' for one of EM_CUDA, None for anything else."""
    if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
        return None
    return "cubin" if struct.unpack_from("<H", head, 18)[0] == EM_CUDA else "so"


CUBIN_ABI_V2 = 8  # e_ident[EI_ABIVERSION] of cubins from CUDA 12.8 on
CUBIN_KNOWN_LOW_BITS = 0x0E  # 0x8: arch-specific (`a`); 0x2, 0x4: set on plain sm_100 cubins too


def cubin_archs(head: bytes) -> coverage.Coverage | None:
    """The SASS architecture of a cubin from its ELF header, where its form is one checked against cuobjdump: ABI
    version 8, the architecture in e_flags bits 8-15, bit 3 for `a`, no other low bit but 0x2 and 0x4 (2,222 cubins
    of flashinfer-cubin 0.6.12, sm_100/100a/103a, each decoded as cuobjdump 13.5 lists it). None otherwise (then
    cuobjdump reads it): ABI version 7, a family (`f`) cubin or any bit not seen."""
    if elf_kind(head) != "cubin" or head[8] != CUBIN_ABI_V2:
        return None
    flags, = struct.unpack_from("<I", head, 48)
    if flags & 0xFF & ~CUBIN_KNOWN_LOW_BITS:
        return None
    arch = (flags >> 8) & 0xFF
    if not 20 <= arch <= 199:
        return None
    return frozenset({f"sm_{arch}{'a' if flags & 0x8 else ''}"}), frozenset()


def section_names(f: BinaryIO, size: int) -> list[str] | None:
    """The section names of the 64-bit little-endian ELF open in f (size bytes); None when the section table is not
    believable (out of the file, too many entries, a string table over the cap): then cuobjdump decides."""
    f.seek(0)
    head = f.read(64)
    if len(head) < 64:
        return None
    shoff, = struct.unpack_from("<Q", head, 40)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", head, 58)
    if shnum == 0 or shnum > MAX_SECTIONS or shentsize < 64 or shstrndx >= shnum or shoff + shnum * shentsize > size:
        return None
    f.seek(shoff)
    table = f.read(shnum * shentsize)
    if len(table) != shnum * shentsize:
        return None
    strings_off, strings_size = struct.unpack_from("<QQ", table, shstrndx * shentsize + 24)
    if strings_size > MAX_SHSTRTAB or strings_off + strings_size > size:
        return None
    f.seek(strings_off)
    strings = f.read(strings_size)
    names = []
    for i in range(shnum):
        name_off, = struct.unpack_from("<I", table, i * shentsize)
        end = strings.find(b"\0", name_off)
        names.append(strings[name_off:end if end >= 0 else len(strings)].decode("latin-1"))
    return names


def _sections(f: BinaryIO, size: int) -> list[tuple[str, int, int]] | None:
    """(name, offset, size) of each section of the ELF open in f; None when its table is not believable."""
    names = section_names(f, size)
    if names is None:
        return None
    f.seek(0)
    head = f.read(64)
    shoff, = struct.unpack_from("<Q", head, 40)
    shentsize, shnum = struct.unpack_from("<HH", head, 58)
    f.seek(shoff)
    table = f.read(shnum * shentsize)
    return [(name, *struct.unpack_from("<QQ", table, i * shentsize + 24)) for i, name in enumerate(names)]


FATBIN_MAGIC = b"\x50\xed\x55\xba"  # 0xBA55ED50, little-endian
FATBIN_ARCH_SPECIFIC = 0x100000  # entry flag of sm_XYa code (seen on FA3's sm_90a kernels, which cuobjdump 13 lists as sm_90a)
MAX_FATBIN_ENTRIES = 1 << 20


def fatbin_archs(path: Path) -> coverage.Coverage:
    """The architectures in the fatbin headers of the ELF at path, read without cuobjdump: for the fatbins cuobjdump
    13 refuses ("Invalid ELF": vLLM 0.7's and xformers 0.0.28's CUDA 12.4 builds). Each fatbin is a 16-byte header
    (magic 0xBA55ED50, version, header size, payload size) and entries: kind (1 PTX, 2 ELF) at 0, header size at 4,
    payload size at 8, architecture at 28, flags at 40. The `f` family flag is not read (no toolkit before 12.9
    makes it, and cuobjdump reads those). A RuntimeFailure when the file has no readable fatbin."""
    sass: set[str] = set()
    ptx: set[str] = set()
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            sections = _sections(f, size)
            if sections is None:
                raise RuntimeFailure(f"{path}: no readable ELF section table")
            entries = 0
            for name, offset, length in sections:
                if name not in (".nv_fatbin", "__nv_relfatbin"):
                    continue
                pos, end = offset, offset + length
                while pos + 16 <= end:
                    f.seek(pos)
                    header = f.read(16)
                    if header[:4] != FATBIN_MAGIC:
                        block = f.read(min(CHUNK, end - pos - 16))
                        found = (header[1:] + block).find(FATBIN_MAGIC)
                        if found < 0:
                            pos += 16 + len(block) - 3
                            continue
                        pos += 1 + found
                        continue
                    _, _, header_size, payload = struct.unpack("<IHHQ", header)
                    entry, stop = pos + header_size, min(pos + header_size + payload, end)
                    while entry + 48 <= stop:
                        f.seek(entry)
                        e = f.read(48)
                        kind, _, entry_header, entry_size = struct.unpack_from("<HHIQ", e, 0)
                        arch, = struct.unpack_from("<I", e, 28)
                        flags, = struct.unpack_from("<Q", e, 40)
                        entries += 1
                        if entry_header < 48 or entries > MAX_FATBIN_ENTRIES or not 10 <= arch <= 999:
                            raise RuntimeFailure(f"{path}: a fatbin entry that is not believable")
                        suffix = "a" if flags & FATBIN_ARCH_SPECIFIC else ""
                        if kind == 2:
                            sass.add(f"sm_{arch}{suffix}")
                        elif kind == 1:
                            ptx.add(f"compute_{arch}{suffix}")
                        entry += entry_header + entry_size
                    pos = max(stop, pos + 16)
    except (OSError, struct.error) as exc:
        raise RuntimeFailure(f"{path}: fatbin not readable ({exc})") from None
    if not sass and not ptx:
        raise RuntimeFailure(f"{path}: no fatbin entries found")
    return frozenset(sass), frozenset(ptx)


def has_fatbin(path: Path, size: int) -> bool | None:
    """Whether the ELF at path has a `.nv_fatbin` or `__nv_relfatbin` section; None when its table is not readable."""
    try:
        with open(path, "rb") as f:
            names = section_names(f, size)
    except (OSError, struct.error):
        return None
    return None if names is None else any(n in (".nv_fatbin", "__nv_relfatbin") for n in names)


# --- one layer tar ---------------------------------------------------------------------------------------------

def _normal(name: str) -> str:
    """A member's name as an absolute path: `./opt/x`, `opt/x` and `/opt/x` are `/opt/x`."""
    return posixpath.normpath("/" + name.lstrip("/"))


def _whiteout(found: LayerScan, path: str) -> bool:
    """Record an OCI whiteout (`.wh.NAME` deletes NAME, `.wh..wh..opq` empties its folder); True when path is one."""
    base = posixpath.basename(path)
    if not base.startswith(".wh."):
        return False
    parent = posixpath.dirname(path)
    if base == ".wh..wh..opq":
        found.opaque.append(parent)
    else:
        found.whiteouts.append(posixpath.join(parent, base[4:]))
    return True


def _spool(source: BinaryIO, head: bytes, spool: Path, marked: bool) -> bool:
    """The member (its first bytes already read as head) copied to spool; True when marked already (a cubin) or
    when its bytes hold one of MARKERS (device code inside), looked for across chunk boundaries."""
    with open(spool, "wb") as out:
        out.write(head)
        tail = head[-16:]
        while chunk := source.read(CHUNK):
            out.write(chunk)
            if not marked:
                window = tail + chunk
                marked = any(m in window for m in MARKERS)
                tail = chunk[-16:]
    return marked


def scan_tar(stream: BinaryIO, scratch: Path, where: str, counter: dict | None = None) -> LayerScan:
    """Read one layer's tar from stream (no seeking) and list its ELF files, whiteouts and device code."""
    found = LayerScan()
    counter = counter if counter is not None else {}
    spool = scratch / "member"
    try:
        archive = tarfile.open(fileobj=stream, mode="r|")
        for member in archive:
            path = _normal(member.name)
            if _whiteout(found, path):
                continue
            if not member.isreg() or member.size < 64:
                if member.isdir() or member.issym() or member.islnk():
                    found.elf.pop(path, None)
                continue
            source = archive.extractfile(member)
            head = source.read(64)
            kind = elf_kind(head)
            if kind is None:
                found.elf.pop(path, None)
                continue
            if member.size > MAX_FILE:
                found.unread[path] = f"{member.size} bytes, over the {MAX_FILE >> 30} GiB cap"
                continue
            from_header = cubin_archs(head) if kind == "cubin" else None
            if from_header is not None:  # no spool, no cuobjdump: the header says it
                digest = hashlib.sha256(head)
                while chunk := source.read(CHUNK):
                    digest.update(chunk)
                counter["cubin_headers"] = counter.get("cubin_headers", 0) + 1
                found.elf[path] = FileCoverage(digest.hexdigest(), member.size, kind, tuple(sorted(from_header[0])), ())
                continue
            marked = _spool(source, head, spool, marked=kind == "cubin")
            counter["elf"] = counter.get("elf", 0) + 1
            if not marked:
                found.elf[path] = None
                continue
            if kind == "so" and has_fatbin(spool, member.size) is False:
                found.elf[path] = None
                continue
            try:
                sha, cov, cached = coverage.read_one(spool, fallback=fatbin_archs if kind == "so" else None)
            except RuntimeFailure as exc:
                found.unread[path] = str(exc).replace(str(spool), path)
                continue
            counter["cuobjdump"] = counter.get("cuobjdump", 0) + (0 if cached else 1)
            found.elf[path] = (FileCoverage(sha, member.size, kind, tuple(sorted(cov[0])), tuple(sorted(cov[1])))
                               if cov[0] or cov[1] else None)
    except (tarfile.TarError, EOFError, struct.error) as exc:
        raise RuntimeFailure(f"{where}: not a readable layer tar ({type(exc).__name__}: {exc})") from None
    finally:
        spool.unlink(missing_ok=True)
    return found


# --- the layer cache -------------------------------------------------------------------------------------------

def _layer_cache(diff_id: str) -> Path:
    return paths.cache_dir() / "coverage" / f"layers-v{LAYER_CACHE_VERSION}" / f"{diff_id.removeprefix('sha256:')}.json"


def cached_layer(diff_id: str) -> LayerScan | None:
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", diff_id):
        return None
    try:
        return LayerScan.from_json(json.loads(_layer_cache(diff_id).read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def store_layer(diff_id: str, scan: LayerScan) -> None:
    """Cache a layer's scan, unless a file of it could not be read (that may pass: read it again next time)."""
    if re.fullmatch(r"sha256:[0-9a-f]{64}", diff_id) and not scan.unread:
        paths.write_atomic(_layer_cache(diff_id), json.dumps(scan.to_json()) + "\n")


# --- the image -------------------------------------------------------------------------------------------------

def merge(layers: list[LayerScan]) -> tuple[dict[str, FileCoverage], dict[str, str]]:
    """The final files with device code (and the unread ones) of layers applied bottom up with their whiteouts."""
    files: dict[str, FileCoverage | None] = {}
    unread: dict[str, str] = {}

    def drop(prefix: str, exact: bool) -> None:
        for table in (files, unread):
            for path in [p for p in table if (p == prefix and exact) or p.startswith(prefix.rstrip("/") + "/")]:
                del table[path]

    for layer in layers:
        for folder in layer.opaque:
            drop(folder, exact=False)
        for gone in layer.whiteouts:
            drop(gone, exact=True)
        for path, entry in layer.elf.items():
            files[path] = entry
            unread.pop(path, None)
        for path, why in layer.unread.items():
            files.pop(path, None)
            unread[path] = why
    return {p: c for p, c in sorted(files.items()) if c is not None}, dict(sorted(unread.items()))


def _pipe_from_blob(client: registry.Client, name: str, digest: str, gzipped: bool):
    """A thread streaming the blob (gunzipped) into a pipe: (read end as a file, thread, errors)."""
    read_fd, write_fd = os.pipe()
    try:
        fcntl.fcntl(write_fd, 1031, 1 << 20)  # F_SETPIPE_SZ: fewer wake-ups
    except OSError:
        pass
    errors: list[BaseException] = []

    def produce() -> None:
        inflate = zlib.decompressobj(31) if gzipped else None

        def put(data: bytes) -> None:
            view = memoryview(data)
            while view:
                view = view[os.write(write_fd, view):]

        def sink(chunk: bytes) -> None:
            nonlocal inflate
            if inflate is None:
                put(chunk)
                return
            put(inflate.decompress(chunk))
            while inflate.eof and inflate.unused_data:  # a multi-member gzip
                rest = inflate.unused_data
                inflate = zlib.decompressobj(31)
                put(inflate.decompress(rest))

        try:
            client.blob(name, digest, sink)
            if inflate is not None:
                put(inflate.flush())
        except BaseException as exc:  # noqa: B036 - handed to the reading thread
            errors.append(exc)
        finally:
            os.close(write_fd)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    return os.fdopen(read_fd, "rb", buffering=CHUNK), thread, errors


def _drain(stream: BinaryIO) -> None:
    while stream.read(CHUNK):
        pass


def scan_registry(ref: str) -> ImageScan:
    """Scan the image `host[:port]/name:tag` in a registry, layer by layer (cached layers are not fetched)."""
    started = time.monotonic()
    repository, _, tag = ref.rpartition(":")
    if not repository or "/" in tag:
        raise InputError(f"image {ref!r} has no tag", fix="give host[:port]/name:tag")
    host, name = registry.split(repository)
    client = registry.Client(host)
    found = client.image(name, tag)
    if found is None:
        raise RuntimeFailure(f"{ref} is not in the registry", )
    manifest, config = found
    blobs = manifest.get("layers") or []
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    if not blobs or len(blobs) != len(diff_ids):
        raise RuntimeFailure(f"{ref}: the manifest has {len(blobs)} layers, the config {len(diff_ids)} diff_ids")
    layers, cached, counter = [], 0, {}
    with tempfile.TemporaryDirectory(prefix="coverage-", dir=paths.scratch_dir()) as scratch:
        for index, (blob, diff_id) in enumerate(zip(blobs, diff_ids, strict=True)):
            layer = cached_layer(diff_id)
            if layer is not None:
                cached += 1
                layers.append(layer)
                continue
            media = str(blob.get("mediaType", ""))
            if media not in GZIP_MEDIA + TAR_MEDIA:
                raise RuntimeFailure(f"{ref}: layer {index} is {media or 'of no media type'}: only gzip and plain "
                                     "tar layers are read (scan the gzip tag, not a zstd one)")
            stream, thread, errors = _pipe_from_blob(client, name, str(blob.get("digest")), media in GZIP_MEDIA)
            try:
                with stream:
                    layer = scan_tar(stream, Path(scratch), f"{ref} layer {index}", counter)
                    _drain(stream)  # the blob's digest is checked at its end
            finally:
                thread.join()
            if errors:
                exc = errors[0]
                raise exc if isinstance(exc, (RuntimeFailure, InputError)) else RuntimeFailure(
                    f"{ref} layer {index}: {type(exc).__name__}: {exc}")
            store_layer(diff_id, layer)
            layers.append(layer)
    files, unread = merge(layers)
    return ImageScan(ref, files, unread, len(layers), cached, time.monotonic() - started, counter.get("cuobjdump", 0))


class _Hashing:
    """A read-only stream that hashes what passes through it."""

    def __init__(self, stream: BinaryIO):
        self.stream, self.hash = stream, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.hash.update(data)
        return data


def scan_daemon(ref: str) -> ImageScan:
    """Scan a local image of the docker daemon (`docker save`, streamed); from the cache alone when every layer
    (by diff_id, `docker image inspect`) was scanned before."""
    started = time.monotonic()
    diff_ids = docker.diff_ids(ref)
    layers = {d: cached_layer(d) for d in diff_ids}
    cached = sum(1 for v in layers.values() if v is not None)
    counter: dict = {}
    if cached < len(diff_ids):
        proc = docker.save_stream(ref)
        timer = threading.Timer(SAVE_DEADLINE, proc.kill)
        timer.start()
        try:
            with tempfile.TemporaryDirectory(prefix="coverage-", dir=paths.scratch_dir()) as scratch:
                outer = tarfile.open(fileobj=proc.stdout, mode="r|")
                for member in outer:
                    if not member.isreg() or not (member.name.endswith("/layer.tar")
                                                  or member.name.startswith("blobs/sha256/")):
                        continue
                    inner = _Hashing(outer.extractfile(member))
                    try:
                        layer = scan_tar(inner, Path(scratch), f"{ref} {member.name}", counter)
                    except RuntimeFailure:
                        if member.name.startswith("blobs/"):
                            continue  # an OCI layout's config or manifest blob, not a layer
                        raise
                    _drain(inner)
                    diff_id = f"sha256:{inner.hash.hexdigest()}"
                    if diff_id in layers and layers[diff_id] is None:
                        layers[diff_id] = layer
                        store_layer(diff_id, layer)
                _drain(proc.stdout)
        except tarfile.TarError as exc:
            raise RuntimeFailure(f"docker save {ref}: not a readable tar ({exc})") from None
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
            stderr = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
            proc.wait()
        if proc.returncode != 0:
            raise RuntimeFailure(f"docker save {ref} failed: {stderr.strip()[-300:] or f'exit {proc.returncode}'}")
    missing = [d for d, v in layers.items() if v is None]
    if missing:
        raise RuntimeFailure(f"docker save {ref}: layers {', '.join(m[:19] for m in missing)} were not in its output")
    files, unread = merge([layers[d] for d in diff_ids])
    return ImageScan(f"docker-daemon:{ref}", files, unread, len(diff_ids), cached, time.monotonic() - started,
                     counter.get("cuobjdump", 0))


def scan(ref: str, *, daemon: bool = False) -> ImageScan:
    return scan_daemon(ref) if daemon else scan_registry(ref)
