"""Carry a row's locked wheels to a GPU host without network, in parts that fit one device call, and install them.

A GPU host in host mode (imagematrix/suites/gpu/run_host.sh) has its own Python, torch and CUDA packages but no network.
This script does the two halves of bringing a row's lock there:

    # here (network): download every locked wheel the host does not already have, hash-checked by pip against
    # the lock, and split them into parts of at most --part-mib (a wheel larger than that is cut into chunks)
    python imagematrix/suites/gpu/wheelhouse.py pack LOCK --out .whl [--part-mib 54] [--host NAMES] [--omit NAMES]

    # there (stdlib only; each call carries one part and copies it to the same folder, e.g. /root/wh):
    python3 imagematrix/suites/gpu/wheelhouse.py unpack /root/wh --site /root/site --results OUT
    export PYTHONPATH=/root/site

unpack joins the chunks, checks every wheel's sha256 against the manifest (which pack took from the lock), installs
them with `pip install --no-index --no-deps --target`, and writes OUT/host-versions.json (the locked packages left to
the host and the versions it has) and OUT/omitted.txt, which `build.py gpu-record` turns into the record's wheel line.

The default --host list is what the H200 host image ('cuda', Python 3.12, torch 2.11.0+cu130) has at the versions of
the verl 0.9.1 + vLLM 0.24.0 rows' locks (seen 2026-12-02, docs/gpu-runs): carrying those would only repeat them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

HOST_HAS = ("cuda-toolkit nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 "
            "nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 "
            "nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx torch torchaudio torchvision triton")
# CUDA compiler wheels (a compile needs them, the suite does not: the host has its own nvcc) and flashinfer's
# precompiled kernels (flashinfer JIT-compiles or downloads what it lacks; 600+ MB): not carried
OMIT = "nvidia-cuda-cccl nvidia-cuda-crt nvidia-cuda-nvcc nvidia-cuda-tileiras nvidia-nvvm flashinfer-cubin"
PLATFORMS = ("manylinux_2_35_x86_64", "manylinux_2_34_x86_64", "manylinux_2_31_x86_64", "manylinux_2_28_x86_64",
             "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64", "linux_x86_64")
MiB = 1024 * 1024


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            digest.update(block)
    return digest.hexdigest()


def read_lock(path: Path) -> dict:
    """The lock's entries (the project's parser: pack runs where the project is installed); ValueError saying why
    the file is not a lock."""
    from imagematrix.model import lockfile

    try:
        entries = lockfile.parse(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read the lock {path}: {exc.strerror or exc}") from None
    except (ValueError, IndexError) as exc:  # UnicodeDecodeError; a line that is no `name==version`
        raise ValueError(f"{path} is not a lock file (locks/<row>.txt): {exc}") from None
    if not entries:
        raise ValueError(f"{path} is not a lock file (locks/<row>.txt): no `name==version` line")
    return entries


WHEEL_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*\.whl\Z")  # a file name, never a path


def read_manifest(path: Path) -> dict:
    """The manifest pack wrote into the last part; ValueError saying what is wrong with it."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except RecursionError:
        raise ValueError(f"{path} is not the manifest pack wrote: nested too deeply") from None
    except ValueError as exc:
        raise ValueError(f"{path} is not the manifest pack wrote: not JSON ({exc})") from None
    wheels = manifest.get("wheels") if isinstance(manifest, dict) else None
    names = [manifest.get(key) for key in ("host", "omitted")] if isinstance(manifest, dict) else [None]
    locked = manifest.get("lock_versions") if isinstance(manifest, dict) else None
    if not isinstance(wheels, dict) or not all(
            isinstance(name, str) and WHEEL_NAME_RE.fullmatch(name) and isinstance(info, dict)
            and isinstance(info.get("sha256"), str) for name, info in wheels.items()) \
            or not all(isinstance(n, list) and all(isinstance(x, str) for x in n) for n in names) \
            or not isinstance(locked, dict) or not all(isinstance(v, str) for v in locked.values()):
        raise ValueError(f"{path} is not the manifest pack wrote: an object with wheels (file name -> sha256, size), "
                         "host and omitted (lists of names) and lock_versions (name -> version)")
    return manifest


def _download(cmd: list[str], carry: dict, work: Path, canonicalize_name) -> int:
    """The carried wheels into work by `cmd` (pip download, hash-checked); what has no wheel for the host is built
    here from its locked sdist, then the rest downloaded again. 0, or 1 with pip's error on stderr."""
    wheel_reqs, sdist_reqs = work / "wheels.txt", work / "sdists.txt"
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode == 0:
        return 0
    missing = sorted(set(re.findall(r"No matching distribution found for ([\w.-]+)==", done.stderr)))
    if not missing:
        sys.stderr.write(done.stderr[-3000:])
        return 1
    print(f"no wheel for {', '.join(missing)}: building them from the locked sdists", flush=True)
    sdist_only = {canonicalize_name(m) for m in missing}
    wheel_reqs.write_text("".join(e.text for n, e in carry.items() if n not in sdist_only))
    for name in sorted(sdist_only):
        sdist_reqs.write_text(carry[name].text)
        built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--require-hashes",
                                "-w", str(work), "-r", str(sdist_reqs)], capture_output=True, text=True)
        if built.returncode != 0:
            sys.stderr.write(built.stderr[-3000:])
            return 1
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-3000:])
        return 1
    return 0


def first_fit(files: list[tuple[Path, int]], limit: int) -> list[list[tuple[Path, int, int]]]:
    """(file, size) pairs, in the order given, first-fit into parts of at most limit bytes; a file larger than a
    part is cut into chunks of a part's size. Each part: (file, offset, length) pieces."""
    parts: list[list[tuple[Path, int, int]]] = [[]]
    sizes = [0]
    for path, size in files:
        offset = 0
        while offset < size:
            length = min(limit, size - offset)
            slot = next((i for i, used in enumerate(sizes) if used + length <= limit), None)
            if slot is None:
                parts.append([])
                sizes.append(0)
                slot = len(parts) - 1
            parts[slot].append((path, offset, length))
            sizes[slot] += length
            offset += length
    return parts


def pack(args) -> int:
    # here, where the project is installed (unpack, on the host, stays stdlib-only)
    from packaging.utils import canonicalize_name

    entries = args.entries
    host = {canonicalize_name(n) for n in args.host.split()}
    omit = {canonicalize_name(n) for n in args.omit.split()}
    carry = {n: e for n, e in entries.items() if n not in host and n not in omit}
    work = args.out / "download"
    work.mkdir(parents=True, exist_ok=True)
    # wheels first, hash-checked against the lock; what has no wheel for the host is built here from its locked sdist
    (work / "wheels.txt").write_text("".join(e.text for e in carry.values()))
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
           args.python_version, "--implementation", "cp", "--require-hashes", "-d", str(work), "-r",
           str(work / "wheels.txt")]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    if _download(cmd, carry, work, canonicalize_name) != 0:
        return 1
    files = sorted(p for p in work.iterdir() if p.suffix == ".whl")
    found = {canonicalize_name(p.name.split("-")[0]) for p in files}
    if found != set(carry):
        print(f"wheels missing for {sorted(set(carry) - found)}", file=sys.stderr)
        return 1
    limit = args.part_mib * MiB
    manifest = {"lock": args.lock.name, "host": sorted(host & set(entries)), "omitted": sorted(omit & set(entries)),
                "lock_versions": {n: entries[n].version for n in host & set(entries)},
                "wheels": {p.name: {"sha256": _sha256(p), "size": p.stat().st_size} for p in files}}
    parts = first_fit([(p, p.stat().st_size) for p in sorted(files, key=lambda p: -p.stat().st_size)], limit)
    for index, part in enumerate(parts, 1):
        folder = args.out / f"p{index:02d}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        for path, offset, length in part:
            name = path.name if length == path.stat().st_size else f"{path.name}.chunk{offset // limit:03d}"
            with path.open("rb") as src, (folder / name).open("wb") as dst:
                src.seek(offset)
                dst.write(src.read(length))
    (args.out / f"p{len(parts):02d}" / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    total = sum(p.stat().st_size for p in files) / MiB
    print(f"{len(files)} wheels, {total:.0f} MiB, in {len(parts)} parts of at most {args.part_mib} MiB under "
          f"{args.out}; {len(manifest['host'])} left to the host, {len(manifest['omitted'])} omitted; "
          f"the manifest is in p{len(parts):02d}")
    return 0


def unpack(args) -> int:
    folder: Path = args.folder
    manifest = args.manifest
    wheels = folder / "wheels"
    wheels.mkdir(exist_ok=True)
    for name, info in manifest["wheels"].items():
        target = wheels / name
        chunks = sorted(folder.glob(f"{name}.chunk*"))
        if (folder / name).is_file():
            shutil.move(str(folder / name), target)
        elif chunks:
            with target.open("wb") as out:
                for chunk in chunks:
                    out.write(chunk.read_bytes())
                    chunk.unlink()
        if not target.is_file() or _sha256(target) != info["sha256"]:
            print(f"{name}: missing or its sha256 differs from the manifest", file=sys.stderr)
            return 1
    # what the host itself has of the packages left to it (before our site shadows anything)
    import importlib.metadata as md
    host_versions, missing = [], []
    locked = manifest["lock_versions"]
    for name in manifest["host"]:
        try:
            have = md.version(name)
        except md.PackageNotFoundError:
            missing.append(name)
            continue
        want = locked.get(name)
        host_versions.append({"name": name, "version": have, "locked": want,
                              "match_ignoring_local": want is None or have.split("+")[0] == want})
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "host-versions.json").write_text(json.dumps({"packages": host_versions, "missing": missing},
                                                                indent=1))
    (args.results / "omitted.txt").write_text("\n".join(manifest["omitted"]) + "\n")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                           "--no-cache-dir", "--upgrade", "--target", str(args.site),
                           *sorted(str(p) for p in wheels.glob("*.whl"))])
    if done.returncode != 0:
        print(f"pip could not install the wheels into {args.site}", file=sys.stderr)
        return 1
    print(f"{len(manifest['wheels'])} wheels installed into {args.site}; host keeps {len(host_versions)} "
          f"({len(missing)} missing there)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    p = sub.add_parser("pack", help="download the lock's wheels the host lacks and split them into parts")
    p.add_argument("lock", type=Path)
    p.add_argument("--out", type=Path, default=Path(".whl"))
    p.add_argument("--part-mib", type=_positive, default=54, help="the size of a part, MiB (at least 1)")
    p.add_argument("--python-version", default="3.12")
    p.add_argument("--host", default=HOST_HAS, help="locked packages the host already has (space-separated)")
    p.add_argument("--omit", default=OMIT, help="locked packages not carried (space-separated)")
    p.set_defaults(func=pack)
    u = sub.add_parser("unpack", help="on the host: join, check and install the carried wheels")
    u.add_argument("folder", type=Path)
    u.add_argument("--site", type=Path, required=True)
    u.add_argument("--results", type=Path, required=True)
    u.set_defaults(func=unpack)
    args = parser.parse_args(argv)
    # bad arguments: the usage line and exit 2 (argparse's), before any work and never a traceback
    try:
        if args.verb == "pack":
            if args.out.exists() and not args.out.is_dir():
                raise ValueError(f"--out {args.out} is not a directory")
            args.entries = read_lock(args.lock)
        else:
            for option, path in (("--site", args.site), ("--results", args.results)):
                if path.exists() and not path.is_dir():
                    raise ValueError(f"{option} {path} is not a directory")
            if not args.folder.is_dir():
                raise ValueError(f"{args.folder} is not a directory: pass the folder the parts were copied to")
            if not (args.folder / "manifest.json").is_file():
                raise ValueError(f"{args.folder / 'manifest.json'}: missing: copy the last part there too")
            args.manifest = read_manifest(args.folder / "manifest.json")
    except ValueError as exc:
        parser.error(str(exc))
    os.environ.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    return args.func(args)


def _positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1 (a part of 0 MiB holds nothing)")
    return value


if __name__ == "__main__":
    sys.exit(main())
