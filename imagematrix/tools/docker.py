"""The docker CLI: the one module that runs it (find the CLI, ask the daemon, run, pull, import, log a run, read an
image's layers and size)."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from imagematrix.model.errors import RuntimeFailure
from imagematrix.tools import process


@functools.cache
def cli() -> str:
    """The docker CLI to use: one that has buildx, else Debian's 20.10 CLI (BuildKit via DOCKER_BUILDKIT=1)."""
    candidates = [shutil.which("docker"), "/usr/bin/docker"]
    for path in candidates:
        if path and os.path.exists(path) and has_buildx(path):
            return path
    for path in ("/usr/bin/docker", shutil.which("docker")):
        if path and os.path.exists(path):
            return path
    raise RuntimeFailure("no docker CLI: run `python build.py setup` (installs Debian's docker.io)")


@functools.cache
def has_buildx(path: str) -> bool:
    return subprocess.run([path, "buildx", "version"], capture_output=True, text=True).returncode == 0


def forget() -> None:
    """Drop the cached answers (after an install changed which CLI and plugins exist)."""
    cli.cache_clear()
    has_buildx.cache_clear()


def daemon_running() -> bool:
    path = shutil.which("docker") or "/usr/bin/docker"
    return os.path.exists(path) and subprocess.run([path, "info", "--format", "{{.ServerVersion}}"],
                                                   capture_output=True, text=True).returncode == 0


def require_daemon() -> None:
    if not daemon_running():
        raise RuntimeFailure("no Docker daemon is running (or it is not reachable): start dockerd, "
                             "or run `python build.py setup` to install and start it")


def run(*args: str, timeout: float | None = None, input: str | None = None, env: dict[str, str] | None = None,
        program: str | None = None) -> subprocess.CompletedProcess:
    """`docker ARGS...` (program: another docker CLI), output captured as text; past timeout a RuntimeFailure."""
    try:
        return subprocess.run([program or cli(), *args], capture_output=True, text=True, timeout=timeout, input=input, env=env)
    except subprocess.TimeoutExpired:
        raise RuntimeFailure(f"`docker {' '.join(args[:3])} ...` did not finish within {timeout:.0f} s") from None


def run_logged(args: list[str], log_path: Path, *, env: dict[str, str] | None = None,
               on_line: Callable[[str], None] | None = None) -> int:
    """`docker ARGS...` with its output in log_path; its exit status."""
    return process.run_logged([cli(), *args], log_path, env=env, on_line=on_line)


def image_exists(ref: str) -> bool:
    return subprocess.run([cli(), "image", "inspect", ref], capture_output=True).returncode == 0


def pull(ref: str) -> subprocess.CompletedProcess:
    return run("pull", ref)


def ensure_image(ref: str, what: str) -> None:
    """ref is here, or is pulled; else a RuntimeFailure naming `what` (e.g. the row)."""
    if image_exists(ref):
        return
    proc = pull(ref)
    if proc.returncode != 0:
        raise RuntimeFailure(f"{what}: no image {ref} here and cannot pull it: {proc.stderr.strip()}")


def import_rootfs(rootfs: Path, image: str, platform: str | None = None) -> str | None:
    """`tar -C rootfs -c . | docker import - image`; None when it worked, else the error. platform: the image's
    platform when it is not this host's (an arm64 root filesystem bootstrapped here): docker 20.10 takes `import
    --platform` only with an experimental daemon, so the tree goes in through BuildKit (FROM scratch, ADD of the
    tar), which writes the platform into the image's config."""
    if platform:
        return _import_for(rootfs, image, platform)
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    imported = subprocess.run([cli(), "import", "-", image], stdin=tar.stdout, capture_output=True, text=True)
    tar.wait()
    if imported.returncode != 0 or tar.returncode != 0:
        return imported.stderr or f"tar exited {tar.returncode}"
    return None


def _import_for(rootfs: Path, image: str, platform: str) -> str | None:
    context = rootfs.parent / "import-context"
    context.mkdir(exist_ok=True)
    tarred = subprocess.run(["tar", "-C", str(rootfs), "-cf", str(context / "rootfs.tar"), "."], capture_output=True,
                            text=True)
    if tarred.returncode != 0:
        return f"tar exited {tarred.returncode}: {tarred.stderr[-400:]}"
    (context / "Dockerfile").write_text("FROM scratch\nADD rootfs.tar /\n")
    built = subprocess.run([cli(), "build", "--platform", platform, "-t", image, str(context)], capture_output=True,
                           text=True, env={**os.environ, "DOCKER_BUILDKIT": "1"})
    return None if built.returncode == 0 else (built.stderr or built.stdout)[-1500:]


def history(image: str) -> list[dict]:
    """`docker history` of a local image, newest layer first: one dict per entry with `created_by` (the
    instruction, full text; '' for an imported layer), `comment` and `size` (bytes, uncompressed)."""
    proc = run("history", "--no-trunc", "--human=false", "--format", "{{json .}}", image)
    if proc.returncode != 0:
        raise RuntimeFailure(f"docker history {image} failed: {proc.stderr.strip()}")
    entries = []
    for line in proc.stdout.splitlines():
        if line.strip():
            entry = json.loads(line)
            entries.append({"created_by": entry.get("CreatedBy", ""), "comment": entry.get("Comment", ""),
                            "size": int(entry.get("Size") or 0)})
    return entries


def image_size(image: str) -> int:
    """The local image's total uncompressed size in bytes (`docker image inspect`'s Size)."""
    proc = run("image", "inspect", "--format", "{{.Size}}", image)
    if proc.returncode != 0:
        raise RuntimeFailure(f"docker image inspect {image} failed: {proc.stderr.strip()}")
    return int(proc.stdout.strip())


def diff_ids(image: str) -> list[str]:
    """The local image's layers as the sha256 of each uncompressed layer tar (RootFS.Layers), bottom first."""
    proc = run("image", "inspect", "--format", "{{json .RootFS.Layers}}", image, timeout=60)
    if proc.returncode != 0:
        raise RuntimeFailure(f"docker image inspect {image} failed: {proc.stderr.strip()}")
    try:
        layers = json.loads(proc.stdout)
    except ValueError:
        layers = None
    if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
        raise RuntimeFailure(f"docker image inspect {image}: RootFS.Layers is not a list of digests")
    return layers


def save_stream(image: str) -> subprocess.Popen:
    """`docker save IMAGE` running, its tar on .stdout (binary); the caller reads it, then calls .wait() (or .kill()
    to stop early). Its stderr goes to a pipe read after the end."""
    return subprocess.Popen([cli(), "save", image], stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=1 << 20)
