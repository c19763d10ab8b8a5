"""skopeo: the one place that runs it (registry-to-registry copies that recompress layers; an image's manifest as
the registry serves it and its blobs in a local directory, for `build.py export`).

Why skopeo: the daemon's built-in BuildKit (v0.8, docker.io 20.10) cannot export zstd layers, and a newer BuildKit
would be one more daemon to run; Debian bookworm packages skopeo 1.9, which copies an image between registries and
recompresses every layer (`--dest-compress-format zstd`) without a daemon or a local image store.
Credentials come from the docker config (~/.docker/config.json, what `docker login` wrote) via `--authfile`; a
registry on loopback speaks plain HTTP, so TLS verification is off for it only.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from imagematrix.model import secrets
from imagematrix.model.errors import RuntimeFailure
from imagematrix.model.paths import cache_dir
from imagematrix.tools import registry

FORMATS = ("gzip", "zstd")


def find() -> str | None:
    return shutil.which("skopeo")


def require() -> str:
    found = find()
    if not found:
        raise RuntimeFailure("skopeo is not installed: run `python build.py setup` (it installs Debian's skopeo "
                             "package), or `apt-get install skopeo`")
    return found


def _tls_flags(ref: str, side: str | None) -> list[str]:
    """TLS verification off for a registry on loopback (plain HTTP); side: "src", "dest", or None (inspect)."""
    host = ref.split("/", 1)[0]
    flag = f"--{side}-tls-verify=false" if side else "--tls-verify=false"
    return [flag] if registry.is_loopback(host.split(":")[0]) else []


def _run(args: list[str], what: str, timeout: float) -> bytes:
    """skopeo ARGS; its stdout as bytes (a manifest is hashed as served: never decoded and re-encoded)."""
    try:
        proc = subprocess.run([require(), *args], capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeFailure(f"{what} did not finish within {timeout:.0f} s") from None
    if proc.returncode != 0:
        text = (proc.stderr or proc.stdout).decode("utf-8", "replace")
        lines = [line for line in text.splitlines() if line.strip()]
        raise RuntimeFailure(f"{what} failed: {secrets.redact_text(lines[-1]) if lines else f'exit {proc.returncode}'}")
    return proc.stdout


def version() -> str:
    """`skopeo --version`'s version ("1.9.3"), for provenance records."""
    proc = subprocess.run([require(), "--version"], capture_output=True, text=True)
    return proc.stdout.split()[-1] if proc.returncode == 0 and proc.stdout.split() else "unknown"


def _auth() -> list[str]:
    config = registry.docker_config_dir() / "config.json"
    return ["--authfile", str(config)] if config.is_file() else []


def copy(source: str, target: str, *, compress: str = "zstd", level: int | None = 3,
         timeout: float = 3600) -> None:
    """Copy image source to target (both `host[:port]/name:tag`), every layer recompressed as `compress`.

    Through a local OCI layout (under the cache dir, removed afterwards): copied straight between two tags of one
    repository, skopeo 1.9 finds the source's gzip blobs already at the destination and keeps them, whatever
    --dest-compress-format says (seen here; skopeo 1.14 added --dest-force-compress-format for that)."""
    if compress not in FORMATS:
        raise RuntimeFailure(f"unknown layer compression {compress!r}: one of {', '.join(FORMATS)}")
    what = f"skopeo copy {source} -> {target} ({compress})"
    recompress = ["--dest-compress", "--dest-compress-format", compress]
    if level is not None:
        recompress += ["--dest-compress-level", str(level)]
    cache_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="skopeo-", dir=cache_dir()) as work:
        layout = f"oci:{work}/layout:image"
        _run(["copy", "--retry-times", "2", *_tls_flags(source, "src"), *_auth(), *recompress,
              f"docker://{source}", layout], what, timeout)
        # zstd layers need an OCI manifest: the layout holds one, and skopeo keeps it
        _run(["copy", "--retry-times", "2", *_tls_flags(target, "dest"), *_auth(), layout, f"docker://{target}"],
             what, timeout)


def inspect_raw(ref: str, *, timeout: float = 120) -> bytes:
    """The manifest (or manifest list / index) of the registry image ref (`host[:port]/name:tag` or `...@sha256:D`),
    byte for byte as the registry serves it: its sha256 is the image's manifest digest."""
    return _run(["inspect", "--raw", "--retry-times", "2", *_tls_flags(ref, None), *_auth(), f"docker://{ref}"],
                f"skopeo inspect --raw docker://{ref}", timeout)


def copy_to_dir(source_ref: str, dest_dir: Path, *, decompress: bool = True, daemon: bool = False,
                timeout: float = 3600) -> None:
    """Copy an image into dest_dir as skopeo's `dir:` layout (manifest.json, and each blob in a file named by its
    hex digest), every layer decompressed when `decompress` (then the layer files are the tars whose sha256 are the
    config's rootfs.diff_ids). Source: the registry (`docker://REF`; skopeo checks each blob's digest) or, with
    `daemon`, the local Docker daemon's image REF (`docker-daemon:REF`, through the daemon's image export)."""
    source = f"docker-daemon:{source_ref}" if daemon else f"docker://{source_ref}"
    flags = [] if daemon else ["--retry-times", "2", *_tls_flags(source_ref, "src"), *_auth()]
    if decompress:
        flags.append("--dest-decompress")
    _run(["copy", *flags, source, f"dir:{dest_dir}"], f"skopeo copy {source} -> dir:{dest_dir}", timeout)
