"""Helpers shared by unit and integration tests (no fixtures: those live in conftest.py)."""

from __future__ import annotations

import contextlib
import http.server
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from imagematrix.in_image import patch_apply
from imagematrix.tools import host


def tool(name: str) -> str | None:
    """A test tool's path: the one beside the running interpreter first (the venv's bin/, where the test extra puts
    hadolint, actionlint and act, whether or not that venv is activated), else the one on PATH, else None."""
    beside = Path(sys.executable).parent / name  # not resolved: a venv's python is a link out of its bin/
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def venv_path() -> str:
    """PATH with the running interpreter's bin/ first: what an activated venv gives a child process."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


CREATED_NAMESPACES: list[str] = []


def namespace(kind: str) -> str:
    """A fresh namespace of the embedded registry (`127.0.0.1:5000/imagematrix-<kind>-<8 hex>`), so that no test
    touches a real tag or finds an earlier run's; it is removed when the session ends (tests/conftest.py)."""
    name = f"{host.REGISTRY}/imagematrix-{kind}-{uuid.uuid4().hex[:8]}"
    CREATED_NAMESPACES.append(name)
    return name


def registry_storage(address: str = host.REGISTRY) -> Path | None:
    """The repositories folder of the registry process serving `address` on this machine (docker-registry serve
    CONFIG: its config's filesystem rootdirectory), or None when no such process is found."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
            if len(args) < 3 or not args[0].endswith(b"docker-registry") or args[1] != b"serve":
                continue
            config = (proc / "cwd").resolve() / os.fsdecode(args[2])
            text = config.read_text()
        except OSError:
            continue
        addr = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                     if line.strip().startswith("addr:")), None)
        root = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                     if line.strip().startswith("rootdirectory:")), None)
        if addr == address and root:
            return Path(root) / "docker" / "registry" / "v2" / "repositories"
    return None


def remove_namespaces(names: list[str]) -> list[str]:
    """Remove what tests pushed to these namespaces: their repositories in the registry's storage (the blobs go at
    the registry's next garbage collection) and the daemon's tags under them. Returns what it removed."""
    removed: list[str] = []
    storage = registry_storage() if names else None
    for name in names:
        path = name.removeprefix(f"{host.REGISTRY}/")
        if storage and "/" not in path and path.startswith("imagematrix-") and (storage / path).is_dir():
            shutil.rmtree(storage / path, ignore_errors=True)
            removed.append(name)
    docker = shutil.which("docker")
    if names and docker:
        listed = subprocess.run([docker, "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True,
                                text=True, timeout=60)
        tagged = [ref for ref in listed.stdout.split() if any(ref.startswith(f"{name}/") for name in names)]
        if tagged:
            subprocess.run([docker, "rmi", "--force", *tagged], capture_output=True, timeout=300)
            removed.extend(tagged)
    return removed


def actions_expand(matrix: dict) -> list[dict]:
    """The jobs GitHub Actions makes of a strategy.matrix: dimensions crossed, then include/exclude applied."""
    dims = {k: v for k, v in matrix.items() if k not in ("include", "exclude")}
    if any(not isinstance(v, list) or not v for v in dims.values()):
        raise ValueError("every matrix dimension must be a non-empty list")
    jobs = [dict(zip(dims, values, strict=True)) for values in itertools.product(*dims.values())] if dims else []
    jobs = [j for j in jobs if not any(all(j.get(k) == v for k, v in ex.items()) for ex in matrix.get("exclude", []))]
    for extra in matrix.get("include", []):
        matched = [j for j in jobs if all(j.get(k) == v for k, v in extra.items() if k in dims)]
        if dims and matched:
            for j in matched:
                j.update({k: v for k, v in extra.items() if k not in dims})
        else:
            jobs.append(dict(extra))
    if not jobs:
        raise ValueError("Matrix vector does not contain any values")  # what Actions reports for an empty matrix
    return jobs


def fake_site(tmp_path: Path, version: str, files: dict[str, str], package: str = "vllm") -> Path:
    site = tmp_path / "site"
    dist = site / f"{package.replace('-', '_')}-{version}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
    for name, text in files.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(text)
    return site


def run_applier(site: Path, patch_json: Path, record: Path, *extra: str):
    """Run patch_apply.py as a script, as the Dockerfile does, with `site` as the installed packages."""
    return subprocess.run([sys.executable, patch_apply.__file__, str(patch_json), "--record", str(record), *extra],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(site)})


# --- local HTTP servers: an index, registry or mirror that misbehaves on purpose (the real ones cannot be made to) ---

class QuietHandler(http.server.BaseHTTPRequestHandler):
    """A request handler that keeps the test's output clean (no access log on stderr)."""

    def log_message(self, *args) -> None:
        pass


def answering(body: bytes | Callable[[str], bytes], content_type: str) -> type[QuietHandler]:
    """A handler answering every GET with 200 and `body` (bytes, or a function of the request path)."""

    class Handler(QuietHandler):
        def do_GET(self):
            data = body(self.path) if callable(body) else body
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


@contextlib.contextmanager
def serving(handler) -> Iterator[http.server.ThreadingHTTPServer]:
    """`handler` served on a free loopback port for the duration of the block (server.server_port)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


HOSTILE_MODES = ("drip", "drip-headers", "huge", "huge-unannounced", "short", "bad-status", "hang-up", "nested",
                 "redirect")


def hostile(mode: str, body: bytes | Callable[[str], bytes] = b"{}", content_type: str = "application/json", *,
            every: float = 0.2, size: int = 8 << 20, location: str = "ftp://127.0.0.1:9/x",
            only: str | None = None) -> type[QuietHandler]:
    """A server that misbehaves in one of HOSTILE_MODES on every GET and HEAD (issue 26, items 4, 5 and 7):

    drip: the headers at once, then `body` one byte every `every` seconds; drip-headers: the status line, then the
    headers one byte every `every` seconds; huge: `size` bytes announced by Content-Length; huge-unannounced: `size`
    bytes without Content-Length; short: a Content-Length 1000 bytes longer than the body it sends; bad-status: a
    garbled status line; hang-up: the connection closed without an answer; nested: JSON nested 100000 deep;
    redirect: 302 to `location`. With `only`, the requests whose path lacks it are answered well (200 and `body`).
    A client that gives up ends the server's part (no traceback from it)."""
    if mode not in HOSTILE_MODES:
        raise ValueError(mode)

    class Handler(QuietHandler):
        def _answer(self):
            data = body(self.path) if callable(body) else body
            try:
                self._misbehave(data)
            except OSError:  # the client gave up, as it should (a broken pipe, a reset, a TLS EOF)
                pass

        def _misbehave(self, data: bytes):
            out = self.wfile
            if only and only not in self.path:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                out.write(data)
            elif mode == "bad-status":
                out.write(b"HTTP/1.1 OK-ish garbage\r\n\r\n")
            elif mode == "hang-up":
                self.close_connection = True
            elif mode == "redirect":
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif mode == "drip-headers":
                out.write(b"HTTP/1.1 200 OK\r\n")
                for byte in f"Content-Type: {content_type}\r\nContent-Length: {len(data)}\r\n\r\n".encode():
                    out.write(bytes([byte]))
                    out.flush()
                    time.sleep(every)
                out.write(data)
            else:
                payload = {"nested": b"[" * 100_000 + b"]" * 100_000}.get(mode, data)
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                if mode in ("huge", "huge-unannounced"):
                    if mode == "huge":
                        self.send_header("Content-Length", str(size))
                    self.end_headers()
                    if self.command != "HEAD":
                        block = b" " * (1 << 16)
                        for _ in range(size // len(block)):
                            out.write(block)
                    return
                self.send_header("Content-Length", str(len(payload) + (1000 if mode == "short" else 0)))
                self.end_headers()
                if self.command == "HEAD":
                    return
                if mode == "drip":
                    for byte in payload:
                        out.write(bytes([byte]))
                        out.flush()
                        time.sleep(every)
                else:
                    out.write(payload)
            self.close_connection = True

        do_GET = do_HEAD = _answer

    return Handler


# A GPU run's raw results (imagematrix/suites/gpu/run_host.sh's OUT), the least gpu-record accepts: for the record tests.
GPU_ROW = "verl0.9.1-vllm0.24.0-torch2.11.0-cu130-py312"
GPU_JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="test_gpu_cuda" name="test_torch_sees_a_gpu" time="4.5"/></testsuite></testsuites>"""


def gpu_raw_results(raw):
    raw.mkdir()
    (raw / "junit.xml").write_text(GPU_JUNIT)
    (raw / "gpu.csv").write_text("NVIDIA H200, 580.159.04, 143771 MiB, 9.0\n")
    (raw / "env.json").write_text(json.dumps({"row": GPU_ROW, "python": "3.12.3", "torch_cuda": "13.0",
                                              "versions": {"torch": "2.11.0+cu130"}}))
    return raw


def fuzz_settings(examples: int):
    """Hypothesis settings of the property tests: `examples` per file; no deadline (a render takes a while), no
    example database (every run explores afresh), and fixtures that stay the same across examples."""
    from hypothesis import HealthCheck, settings

    return settings(max_examples=examples, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def index_drift(old: str, new: str) -> list[str]:
    """What a re-lock changed against `old` that the real index does not explain; [] when nothing did.

    The index behind this machine lists releases with upload times before a committed lock's cutoff after the lock was
    written (2026-12-02: httpx 0.29.0; 2026-12-07: loguru 0.8.0, peft 0.22.0, regex 2026.11.25, ... appeared between
    two re-locks a minute apart), which real PyPI cannot do. So two resolutions at one cutoff can differ, and a test
    that compares lock bytes compares them modulo that: the header (cutoff, input, platform) must be the same, and
    each moved pin must be an upgrade to, or an addition of, a release that the index (read now) dates at or before
    the cutoff; a package may leave only beside such a move; a changed hash of an unchanged version is never
    explained."""
    from packaging.version import Version

    from imagematrix.model import lockfile
    from imagematrix.stages import locks
    from imagematrix.tools import pypi_releases

    (old_head, old_body), (new_head, new_body) = lockfile.split(old), lockfile.split(new)
    if old_head == new_head and old_body == new_body:
        return []
    strip = lambda head: [line for line in head.splitlines() if not line.startswith("# body-digest:")]  # noqa: E731
    if strip(old_head) != strip(new_head):
        return [f"header: {strip(old_head)} -> {strip(new_head)}"]
    cutoff = lockfile.EXCLUDE_NEWER_RE.search(old_head).group(1)

    def dated_before(name: str, version: str) -> bool:
        found = [r for r in pypi_releases.releases(name) if Version(r.version) == Version(version)]
        return bool(found) and found[0].uploaded is not None and found[0].uploaded[:19] <= cutoff[:19]

    def hashes(body: str, name: str) -> set[str]:
        return {word for word in lockfile.parse(body)[name].text.split() if word.startswith("--hash=")}

    lines = locks.changes(old_body, new_body)
    moved = [line for line in lines if "->" in line and "(none)" not in line]
    unexplained = []
    for line in lines:
        name, _, change = line.partition(": ")
        was, arrow, now = change.partition(" -> ")
        if not arrow:  # `name: version (files changed)`: explained when the index only added files to the release
            if not hashes(old_body, name) <= hashes(new_body, name):
                unexplained.append(line)
        elif now == "(none)":
            if not moved:
                unexplained.append(line)
        elif (was != "(none)" and Version(now) <= Version(was)) or not dated_before(name, now):
            unexplained.append(line)
    return unexplained
