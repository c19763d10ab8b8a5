"""An image's filesystem on a host without docker: the host side of `build.py export` (docs/image-mode.md).

    python3 imagefs.py inventory --out FILE [--site DIR ...]       the large files this host already holds
    python3 imagefs.py stash DIR --manifest M --store STORE         verify carried parts and keep them
    python3 imagefs.py missing --manifest M --store STORE           the parts STORE still lacks (JSON)
    python3 imagefs.py unpack --manifest M --store STORE --rootfs DIR [--site DIR ...]

Standard library only: it runs on the GPU host with whatever Python is there. Layers are applied in order the way
containerd applies them: paths resolved inside the root (a symlink never leads out of it), OCI whiteouts (`.wh.NAME`
deletes NAME, `.wh..wh..opq` empties its directory of what lower layers put there), owners, modes, times and
xattrs kept. A thinned file (a stub carrying the PAX headers IMAGEMATRIX.sha256 / IMAGEMATRIX.size) is copied from
the host file of that digest, hashed while it is copied. Every part is checked against the manifest's sha256 before
it is kept or read. Exit 2 for bad input, 1 when the unpack fails.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import sys
import sysconfig
import tarfile
import time

FORMAT = "imagematrix-export/1"
INVENTORY_FORMAT = "imagematrix-host-inventory/1"
PAX_SHA = "IMAGEMATRIX.sha256"  # stages/export.py writes with these very names (it imports them)
PAX_SIZE = "IMAGEMATRIX.size"
MIN_THIN = 1 << 20  # only files of at least 1 MiB are thinned
HEX64 = re.compile(r"[0-9a-f]{64}")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
PART = re.compile(r"[0-9a-f]{32}\.(gz|xz)\.[0-9]{3}")
CODECS = {"gzip": "gz", "xz": "xz"}
MANIFEST_MAX = 16 << 20
CHUNK = 1 << 20
DONE = ".imagematrix-unpacked"  # beside the rootfs: DIR.imagematrix-unpacked holds the manifest digest


class BadInput(Exception):
    """Bad input (exit 2): a manifest, part or inventory that is not what it must be."""


class Failed(Exception):
    """The unpack could not be done (exit 1)."""


# ---- the manifest ----------------------------------------------------------------------------------------------

def _need(cond: bool, path: str, what: str) -> None:
    if not cond:
        raise BadInput(f"{path}: {what}")


def load_manifest(path: str) -> dict:
    """The export manifest at `path`, checked field by field (it is hostile until checked)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MANIFEST_MAX + 1)
    except OSError as exc:
        raise BadInput(f"{path}: cannot read the manifest ({exc.strerror})") from None
    _need(len(raw) <= MANIFEST_MAX, path, f"larger than {MANIFEST_MAX >> 20} MiB")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadInput(f"{path}: not a JSON manifest ({type(exc).__name__})") from None
    _need(isinstance(data, dict) and data.get("format") == FORMAT, path, f"not an {FORMAT} manifest")
    _need(isinstance(data.get("manifest_digest"), str) and bool(DIGEST.fullmatch(data["manifest_digest"])),
          path, "manifest_digest is not sha256:<64 hex>")
    _need(data.get("codec") in CODECS, path, f"codec must be one of {sorted(CODECS)}")
    config = data.get("config")
    _need(isinstance(config, dict), path, "config is not a mapping")
    _need(isinstance(config.get("Env") or [], list) and all(isinstance(e, str) and "=" in e and "\0" not in e
                                                            for e in config.get("Env") or []),
          path, "config.Env is not a list of NAME=value strings")
    for key in ("WorkingDir", "User"):
        _need(isinstance(config.get(key) or "", str), path, f"config.{key} is not a string")
    layers = data.get("layers")
    _need(isinstance(layers, list) and bool(layers), path, "layers is not a non-empty list")
    ext = CODECS[data["codec"]]
    for i, layer in enumerate(layers):
        where = f"layers[{i}]"
        _need(isinstance(layer, dict), path, f"{where} is not a mapping")
        _need(isinstance(layer.get("diff_id"), str) and bool(DIGEST.fullmatch(layer["diff_id"])), path,
              f"{where}.diff_id is not sha256:<64 hex>")
        _need(isinstance(layer.get("stream"), str) and bool(HEX64.fullmatch(layer["stream"])), path,
              f"{where}.stream is not 64 hex digits")
        parts = layer.get("parts")
        _need(isinstance(parts, list) and bool(parts), path, f"{where}.parts is not a non-empty list")
        for j, part in enumerate(parts):
            _need(isinstance(part, dict) and isinstance(part.get("name"), str)
                  and bool(PART.fullmatch(part["name"])) and part["name"].startswith(layer["stream"][:32])
                  and part["name"].split(".")[1] == ext and part["name"].endswith(f".{j:03d}"),
                  path, f"{where}.parts[{j}].name is not {layer['stream'][:32]}.{ext}.{j:03d}")
            _need(isinstance(part.get("sha256"), str) and bool(HEX64.fullmatch(part["sha256"])), path,
                  f"{where}.parts[{j}].sha256 is not 64 hex digits")
            _need(type(part.get("size")) is int and part["size"] > 0, path, f"{where}.parts[{j}].size is not a "
                  "positive integer")
    return data


def parts_of(manifest: dict) -> dict[str, dict]:
    """Every part the manifest names, by file name."""
    return {part["name"]: part for layer in manifest["layers"] for part in layer["parts"]}


# ---- the host's inventory --------------------------------------------------------------------------------------

def site_dirs(extra: list[str] | None = None) -> list[str]:
    found = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *(extra or [])]
    return list(dict.fromkeys(os.path.realpath(d) for d in found if os.path.isdir(d)))


def host_files(sites: list[str]) -> dict[str, tuple[str, int]]:
    """sha256 hex -> (path, size) of every file of at least MIN_THIN bytes that a RECORD of `sites` lists.

    RECORD's claims are only leads: unpack hashes each file as it copies it and fails on a mismatch."""
    found: dict[str, tuple[str, int]] = {}
    for site in sites:
        for entry in sorted(os.listdir(site)):
            record = os.path.join(site, entry, "RECORD")
            if not entry.endswith(".dist-info") or not os.path.isfile(record):
                continue
            with open(record, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    fields = line.rstrip("\n").rsplit(",", 2)
                    if len(fields) != 3 or not fields[1].startswith("sha256=") or not fields[2].isdigit():
                        continue
                    if int(fields[2]) < MIN_THIN:
                        continue
                    try:
                        digest = base64.urlsafe_b64decode(fields[1][7:] + "=" * (-len(fields[1][7:]) % 4)).hex()
                    except ValueError:
                        continue
                    path = os.path.normpath(os.path.join(site, fields[0].strip('"')))
                    if len(digest) == 64 and os.path.isfile(path):
                        found.setdefault(digest, (path, int(fields[2])))
    return found


def inventory(sites: list[str]) -> dict:
    files = host_files(sites)
    return {"format": INVENTORY_FORMAT, "sites": sites,
            "files": {digest: size for digest, (_, size) in sorted(files.items())}}


# ---- carried parts ---------------------------------------------------------------------------------------------

def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def missing(manifest: dict, store: str) -> list[str]:
    """The manifest's parts that `store` does not hold (by name and size; stash checked their digests)."""
    return [name for name, part in parts_of(manifest).items()
            if not (os.path.isfile(os.path.join(store, name))
                    and os.path.getsize(os.path.join(store, name)) == part["size"])]


def stash(carried: str, manifest: dict, store: str) -> dict:
    """Move the manifest's parts found in `carried` into `store`, each checked against its sha256 first."""
    os.makedirs(store, exist_ok=True)
    wanted, kept, refused = parts_of(manifest), [], []
    for name in sorted(os.listdir(carried)):
        part = wanted.get(name)
        src = os.path.join(carried, name)
        if part is None or not os.path.isfile(src):
            continue
        if os.path.getsize(src) != part["size"] or file_sha256(src) != part["sha256"]:
            refused.append(name)
            continue
        tmp = os.path.join(store, f".{name}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, os.path.join(store, name))
        kept.append(name)
    if refused:
        raise BadInput(f"{carried}: parts whose size or sha256 differ from the manifest: {', '.join(refused)}")
    return {"kept": kept, "missing": missing(manifest, store)}


class PartsReader:
    """The concatenated parts of one stream as a file object; each part's sha256 is checked as it is read through."""

    def __init__(self, store: str, layer: dict):
        self.store, self.parts, self.index, self.fh, self.hash = store, layer["parts"], -1, None, None
        self.whole = hashlib.sha256()
        self.expected = layer["stream"]
        self._next()

    def _next(self) -> None:
        if self.fh is not None:
            self.fh.close()
            part = self.parts[self.index]
            if self.hash.hexdigest() != part["sha256"]:
                raise Failed(f"part {part['name']} in {self.store} does not match its sha256 (carry it again)")
        self.index += 1
        if self.index < len(self.parts):
            path = os.path.join(self.store, self.parts[self.index]["name"])
            try:
                self.fh = open(path, "rb")
            except OSError:
                raise Failed(f"part {self.parts[self.index]['name']} is not in {self.store} (carry it, then stash)") \
                    from None
            self.hash = hashlib.sha256()
        else:
            self.fh = None
            if self.whole.hexdigest() != self.expected:
                raise Failed(f"stream {self.expected[:16]}… does not match its sha256")

    def read(self, size: int = -1) -> bytes:
        out = b""
        while self.fh is not None and (size < 0 or len(out) < size):
            block = self.fh.read(CHUNK if size < 0 else size - len(out))
            if not block:
                self._next()
                continue
            self.hash.update(block)
            self.whole.update(block)
            out += block
        return out

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


# ---- applying a layer ------------------------------------------------------------------------------------------

def member_path(name: str) -> str:
    """A tar member's name as a relative path, refused when it could name anything outside the root."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or "\0" in name:
        raise Failed(f"layer entry {name!r} is not a plain path inside the image")
    return "/".join(parts)


def resolve(root: str, rel: str, limit: int = 64) -> str:
    """`rel` inside `root`, every symlink on the way followed as if `root` were / (it never leads out of root)."""
    todo = [p for p in rel.split("/") if p not in ("", ".")]
    done: list[str] = []
    links = 0
    while todo:
        part = todo.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        path = os.path.join(root, *done, part)
        if os.path.islink(path):
            links += 1
            if links > limit:
                raise Failed(f"too many levels of symlinks under {rel!r}")
            target = os.readlink(path)
            if target.startswith("/"):
                done = []
            todo = [p for p in target.split("/") if p not in ("", ".")] + todo
            continue
        done.append(part)
    return os.path.join(root, *done)


def remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


class Applier:
    """Applies layers, lowest first, to `root`; `host` maps sha256 -> (path, size) for thinned files."""

    def __init__(self, root: str, host: dict[str, tuple[str, int]]):
        self.root, self.host = root, host
        self.stats = {"files": 0, "thinned": 0, "whiteouts": 0, "skipped_devices": 0}

    def layer(self, tar: tarfile.TarFile) -> None:
        made: set[str] = set()  # what this layer made: an opaque whiteout keeps it
        dirs: list[tuple[str, tarfile.TarInfo]] = []
        for member in tar:
            if member.isdir() and not [p for p in member.name.split("/") if p not in ("", ".")]:
                continue  # "./", the root itself (tars made with `tar -C DIR .`): the rootfs folder is its own
            name = member_path(member.name)
            parent, _, base = name.rpartition("/")
            if base.startswith(".wh."):
                self.whiteout(parent, base, made)
                continue
            pdir = resolve(self.root, parent)
            os.makedirs(pdir, exist_ok=True)
            path = os.path.join(pdir, base)
            if not self.entry(tar, member, path):
                continue
            made.add(name)
            if member.isdir():
                dirs.append((path, member))
            else:
                self.attributes(path, member)
        for path, member in reversed(dirs):  # a directory's time after its children are in place
            self.attributes(path, member)

    def whiteout(self, parent: str, base: str, made: set[str]) -> None:
        pdir = resolve(self.root, parent)
        if not os.path.isdir(pdir):
            return
        self.stats["whiteouts"] += 1
        if base == ".wh..wh..opq":
            for child in os.listdir(pdir):
                if f"{parent}/{child}".lstrip("/") not in made:
                    remove(os.path.join(pdir, child))
        else:
            remove(os.path.join(pdir, base[4:]))

    def entry(self, tar: tarfile.TarFile, member: tarfile.TarInfo, path: str) -> bool:
        if os.path.lexists(path) and not (member.isdir() and os.path.isdir(path) and not os.path.islink(path)):
            remove(path)
        if member.isdir():
            os.makedirs(path, exist_ok=True)
        elif member.isreg():
            if PAX_SHA in member.pax_headers:
                self.hydrate(member, path)
            else:
                with tar.extractfile(member) as src, open(path, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
            self.stats["files"] += 1
        elif member.issym():
            os.symlink(member.linkname, path)
        elif member.islnk():
            lparent, _, lbase = member_path(member.linkname).rpartition("/")
            os.link(os.path.join(resolve(self.root, lparent), lbase), path, follow_symlinks=False)
        elif member.isfifo():
            os.mkfifo(path)
        else:  # character and block devices: the runner binds the host's; an image's own are not made
            self.stats["skipped_devices"] += 1
            return False
        return True

    def hydrate(self, member: tarfile.TarInfo, path: str) -> None:
        digest, size = member.pax_headers[PAX_SHA], member.pax_headers.get(PAX_SIZE, "")
        if not HEX64.fullmatch(digest) or not size.isdigit():
            raise Failed(f"thinned entry {member.name!r} has a bad {PAX_SHA}/{PAX_SIZE}")
        found = self.host.get(digest)
        if found is None:
            raise Failed(f"{member.name}: this host holds no file of sha256 {digest[:16]}… (export again with this "
                         "host's inventory, or without --inventory)")
        h = hashlib.sha256()
        with open(found[0], "rb") as src, open(path, "wb") as dst:
            for block in iter(lambda: src.read(CHUNK), b""):
                h.update(block)
                dst.write(block)
        if h.hexdigest() != digest or os.path.getsize(path) != int(size):
            raise Failed(f"{found[0]} changed since its RECORD was written: sha256 {h.hexdigest()[:16]}… is not "
                         f"{digest[:16]}…")
        self.stats["thinned"] += 1

    def attributes(self, path: str, member: tarfile.TarInfo) -> None:
        os.lchown(path, member.uid, member.gid)
        for key, value in member.pax_headers.items():
            if key.startswith("SCHILY.xattr."):
                try:
                    os.setxattr(path, key[13:], value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
                except OSError:
                    pass  # a filesystem without that xattr namespace: the file is still right
        if not member.issym():
            os.chmod(path, member.mode & 0o7777)
        os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)


def unpack(manifest: dict, store: str, rootfs: str, sites: list[str], log=print, layers: int | None = None) -> dict:
    """Apply every layer of `manifest` from `store` into a new `rootfs` (skipped when it is already unpacked).
    layers: only the lowest N (a partial tree, e.g. the OS and torch before the rest has been carried)."""
    if layers is not None:
        if not 1 <= layers <= len(manifest["layers"]):
            raise BadInput(f"--layers {layers}: the image has {len(manifest['layers'])} layers")
        manifest = {**manifest, "layers": manifest["layers"][:layers],
                    "manifest_digest": f"{manifest['manifest_digest']} layers 1-{layers}"}
    done_marker = rootfs.rstrip("/") + DONE
    if os.path.isdir(rootfs) and os.path.isfile(done_marker):
        with open(done_marker) as fh:
            if fh.read().strip() == manifest["manifest_digest"]:
                return {"rootfs": rootfs, "reused": True}
    lacking = missing(manifest, store)
    if lacking:
        raise Failed(f"{store} lacks {len(lacking)} part(s) of this image, e.g. {lacking[0]} (carry them, then stash)")
    tmp = rootfs.rstrip("/") + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    applier = Applier(tmp, host_files(sites) if any(layer.get("thinned_files") for layer in manifest["layers"])
                      else {})
    for i, layer in enumerate(manifest["layers"]):
        started = time.monotonic()
        reader = PartsReader(store, layer)
        stream = gzip.GzipFile(fileobj=reader) if manifest["codec"] == "gzip" else lzma.LZMAFile(reader)
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                applier.layer(tar)
            while stream.read(CHUNK):  # the rest of the stream: every part's digest is checked
                pass
            reader.read()
        except (tarfile.TarError, OSError, EOFError, lzma.LZMAError) as exc:
            raise Failed(f"layer {i + 1} ({layer['diff_id'][:19]}…): {type(exc).__name__}: {exc}") from None
        finally:
            reader.close()
        log(f"layer {i + 1}/{len(manifest['layers'])} {layer['diff_id'][7:19]} applied in "
            f"{time.monotonic() - started:.1f} s")
    shutil.rmtree(rootfs, ignore_errors=True)
    os.replace(tmp, rootfs)
    with open(done_marker, "w") as fh:
        fh.write(manifest["manifest_digest"] + "\n")
    return {"rootfs": rootfs, "reused": False, **applier.stats}


# ---- command line ----------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imagefs.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inventory", help="the large files this host's Python environments hold, by sha256")
    p.add_argument("--out", required=True)
    p.add_argument("--site", action="append", default=[], help="another site-packages folder (e.g. one of an "
                   "image unpacked here earlier: rows that share files carry them once)")
    p.add_argument("--only-sites", action="store_true", help="only the --site folders, not this Python's own")
    for name in ("stash", "missing", "unpack"):
        p = sub.add_parser(name)
        if name == "stash":
            p.add_argument("carried", help="the folder the parts were carried in")
        p.add_argument("--manifest", required=True)
        p.add_argument("--store", required=True, help="where this host keeps parts (content-addressed)")
        if name == "unpack":
            p.add_argument("--rootfs", required=True)
            p.add_argument("--layers", type=int, default=None, help="only the lowest N layers (a partial tree)")
            p.add_argument("--site", action="append", default=[])
    args = parser.parse_args(argv)
    try:
        if args.command == "inventory":
            sites = [os.path.realpath(d) for d in args.site] if args.only_sites else site_dirs(args.site)
            data = inventory(sites)
            with open(args.out + ".tmp", "w") as fh:
                json.dump(data, fh, indent=0, sort_keys=True)
            os.replace(args.out + ".tmp", args.out)
            print(json.dumps({"files": len(data["files"]), "bytes": sum(data["files"].values()),
                              "sites": data["sites"]}))
            return 0
        manifest = load_manifest(args.manifest)
        if args.command == "stash":
            print(json.dumps(stash(args.carried, manifest, args.store)))
        elif args.command == "missing":
            print(json.dumps({"missing": missing(manifest, args.store)}))
        else:
            print(json.dumps(unpack(manifest, args.store, os.path.abspath(args.rootfs), site_dirs(args.site), layers=args.layers,
                                    log=lambda line: print(line, file=sys.stderr, flush=True))))
        return 0
    except BadInput as exc:
        print(f"imagefs: bad input: {exc}", file=sys.stderr)
        return 2
    except (Failed, OSError) as exc:
        print(f"imagefs: failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
