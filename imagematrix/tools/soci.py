"""soci: the one place that runs it (a SOCI index for lazy pulling, made for an image already in a registry).

SOCI (Seekable OCI) lets a client start a container before its layers are downloaded: the SOCI snapshotter mounts
each layer over FUSE and fetches the spans a process reads, with HTTP range requests, guided by an index of the
gzip layers (a zTOC per layer) that sits in the registry beside the image. The image itself is not changed (its
digest, its gzip layers, any docker still pulls it); the index is an OCI image manifest whose `subject` is the
image's manifest, found by the Referrers API or, on a registry without it (Debian's docker-registry 2.8), by the
referrers tag `sha256-<image digest>` that `soci push` writes.

Where it comes from: Debian trixie's soci-snapshotter package (0.4.1: `soci` and `soci-snapshotter-grpc`, static Go
programs), copied by `build.py setup --soci`. eStargz (the other lazy format) cannot be served here: Debian packages
only its converter (`ctr-remote`, stargz-snapshotter 0.12 in bookworm, 0.14 in trixie), not its snapshotter
`containerd-stargz-grpc`.

Making the index needs the image's layers in a containerd content store: `ctr content fetch` into a namespace of
its own on the containerd that dockerd runs (Debian's docker.io starts one), `soci create`, `soci push`, then that
namespace's content is removed. soci keeps its own index store under /var/lib/soci-snapshotter-grpc; the index made
is removed from it after the push.

What a client needs (docs/using/running.md): containerd with soci-snapshotter-grpc as a proxy snapshotter, and a
registry it reaches over HTTPS: soci 0.4.1 fetches the index and the zTOCs with HTTPS only, and its layer reader uses
plain HTTP for a loopback name, so neither a plain-HTTP registry nor one named 127.0.0.1 serves it (seen here).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from imagematrix.model import secrets
from imagematrix.model.errors import RuntimeFailure
from imagematrix.tools import registry

INSTALL_DIR = Path("/usr/local/bin")
CONTAINERD = "/var/run/docker/containerd/containerd.sock"  # the one dockerd starts (Debian's docker.io)
MIN_LAYER = 10 * 1024 * 1024  # soci's default: smaller layers get no zTOC and are pulled whole


def find() -> str | None:
    return shutil.which("soci")


def require() -> str:
    found = find()
    if not found:
        raise RuntimeFailure("soci is not installed: run `python build.py setup --soci` (it copies `soci` from "
                             "Debian trixie's soci-snapshotter package)")
    return found


def _ctr() -> str:
    found = shutil.which("ctr")
    if not found:
        raise RuntimeFailure("ctr is not installed (Debian's containerd package has it; docker.io depends on it)")
    return found


def _remote_flags(ref: str) -> list[str]:
    """Plain HTTP for a registry on loopback (what the embedded registry speaks); credentials from the docker
    config, for ctr and soci alike (`--user`)."""
    host = ref.split("/", 1)[0]
    flags = ["--plain-http"] if registry.is_loopback(host) else []
    creds = registry.credentials(host)
    return [*flags, "--user", f"{creds[0]}:{creds[1]}"] if creds else flags


def _run(cmd: list[str], what: str, timeout: float) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeFailure(f"{what} did not finish within {timeout:.0f} s") from None
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
        raise RuntimeFailure(f"{what} failed: {secrets.redact_text(lines[-1]) if lines else f'exit {proc.returncode}'}")
    return proc.stdout


def version() -> str:
    proc = subprocess.run([require(), "--version"], capture_output=True, text=True)
    return proc.stdout.split()[-1] if proc.returncode == 0 and proc.stdout.split() else "unknown"


def index(ref: str, *, namespace: str, address: str = CONTAINERD, min_layer: int = MIN_LAYER,
          timeout: float = 3600) -> str:
    """Make the SOCI index of the registry image ref (`host[:port]/name:tag`) and push it beside the image.
    Returns the index's digest. The layers go through containerd namespace `namespace` (removed afterwards, with
    everything in it) and soci's own store (the index is removed from it after the push)."""
    soci, ctr = require(), _ctr()
    remote = _remote_flags(ref)
    base = [soci, "--address", address, "--namespace", namespace]
    try:
        _run([ctr, "--address", address, "--namespace", namespace, "content", "fetch", *remote, ref],
             f"ctr content fetch {ref}", timeout)
        out = _run([*base, "create", "--min-layer-size", str(min_layer), ref], f"soci create {ref}", timeout)
        _run([*base, "push", *remote, "--existing-index", "allow", ref], f"soci push {ref}", timeout)
        listed = _run([*base, "index", "list", "--ref", ref, "--quiet"], "soci index list", 60).split()
        if not listed:
            raise RuntimeFailure(f"soci create {ref} made no index: {out.strip()[-300:]}")
        digest = listed[0]
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise RuntimeFailure(f"soci index list answered {digest!r}, not a digest")
        return digest
    finally:
        forget(namespace, address, ref)


def forget(namespace: str, address: str = CONTAINERD, ref: str | None = None) -> None:
    """Remove what index() left: soci's index of ref, the namespace's images, content and the namespace."""
    soci, ctr = find(), shutil.which("ctr")
    if soci and ref:
        subprocess.run([soci, "--address", address, "--namespace", namespace, "index", "rm", "--ref", ref],
                       capture_output=True)
    if not ctr:
        return
    c = [ctr, "--address", address, "--namespace", namespace]
    for name in subprocess.run([*c, "images", "ls", "-q"], capture_output=True, text=True).stdout.split():
        subprocess.run([*c, "images", "rm", name], capture_output=True)
    for blob in subprocess.run([*c, "content", "ls", "-q"], capture_output=True, text=True).stdout.split():
        subprocess.run([*c, "content", "rm", blob], capture_output=True)
    subprocess.run([ctr, "--address", address, "namespaces", "rm", namespace], capture_output=True)
