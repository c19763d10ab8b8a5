"""Helpers shared by unit and integration tests (no fixtures: those live in conftest.py)."""

from __future__ import annotations

import contextlib
import http.server
import itertools
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from imagematrix.in_image import patch_apply


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


def fake_site(tmp_path: Path, version: str, files: dict[str, str]) -> Path:
    site = tmp_path / "site"
    dist = site / f"vllm-{version}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n")
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
