"""Locks against an index that moves (issue 13, item 14), on a local PEP 503/691 index served from a temporary
directory (tiny wheels, upload times in the JSON pages), with the real uv: a lock records its cutoff; after a newer
release of an unpinned dependency appears, re-locking the unchanged row and resolving it as validate does give the
same bytes; `lock --refresh` takes the new release and prints what changed (`package: old -> new`)."""

from __future__ import annotations

import hashlib
import html
import io
import json
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler
from pathlib import Path

import pytest

from imagematrix.model import lockfile
from imagematrix.model import matrix as matrix_mod
from imagematrix.stages import locks, resolve
from imagematrix.tools import pypi
from tests.conftest import GOOD_MATRIX, ROOT
from tests.support import serving

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
ROW = "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311"
PINS_UPLOADED = "2025-01-01T00:00:00.000000Z"
ERA = "2025-01-15T00:00:00Z"  # 14 days after the newest upload among the pins (locks.ERA_MARGIN)


class Index:
    """A simple index in a directory: <root>/<name>/<wheel> and the page of each project, JSON or HTML."""

    def __init__(self, root: Path):
        self.root = root
        self.files: dict[str, list[dict]] = {}

    def add(self, name: str, version: str, uploaded: str, requires: tuple[str, ...] = (),
            extras: tuple[str, ...] = ()) -> None:
        filename = f"{name}-{version}-py3-none-any.whl"
        info = f"{name}-{version}.dist-info"
        metadata = "".join([f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
                            *(f"Provides-Extra: {e}\n" for e in extras),
                            *(f"Requires-Dist: {r}\n" for r in requires)])
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as wheel:
            wheel.writestr(f"{name}/__init__.py", "")
            wheel.writestr(f"{info}/METADATA", metadata)
            wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                            "Tag: py3-none-any\n")
            wheel.writestr(f"{info}/RECORD", "")
        data = buffer.getvalue()
        (self.root / name).mkdir(parents=True, exist_ok=True)
        (self.root / name / filename).write_bytes(data)
        self.files.setdefault(name, []).append({"filename": filename, "url": filename, "upload-time": uploaded,
                                                "hashes": {"sha256": hashlib.sha256(data).hexdigest()}})

    def page(self, name: str, as_json: bool) -> bytes:
        files = self.files.get(name, [])
        if as_json:
            return json.dumps({"meta": {"api-version": "1.1"}, "name": name, "files": files}).encode()
        links = "".join(f'<a href="{html.escape(f["url"])}#sha256={f["hashes"]["sha256"]}">{f["filename"]}</a>\n'
                        for f in files)
        return f"<!DOCTYPE html><html><body>\n{links}</body></html>\n".encode()


class Handler(SimpleHTTPRequestHandler):
    index: Index

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        parts = [p for p in self.path.split("?")[0].split("/") if p]
        if len(parts) == 2 and parts[0] == "simple" and self.path.endswith("/"):
            if parts[1] not in self.index.files:
                self.send_error(404)
                return
            as_json = JSON_TYPE in self.headers.get("Accept", "")
            body = self.index.page(parts[1], as_json)
            self.send_response(200)
            self.send_header("Content-Type", JSON_TYPE if as_json else "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if parts and parts[0] == "simple":
            self.path = "/" + "/".join(parts[1:])
        super().do_GET()


def pins_index(root: Path, transformers: str) -> Index:
    """A local index under `root` holding the verl 0.3 row's pins, transformers at the given version only."""
    idx = Index(root)
    idx.root.mkdir()
    for name, version in (("torch", "2.5.1"), ("tensordict", "0.6.2"), ("transformers", transformers), ("vllm", "0.7.2")):
        idx.add(name, version, PINS_UPLOADED)
    idx.add("verl", "0.3.0.post1", PINS_UPLOADED, requires=("vllm==0.7.2; extra == 'vllm'",), extras=("vllm",))
    return idx


def use_index(monkeypatch, tmp_path, url: str, variable: str = "UV_INDEX_URL") -> None:
    """`url` as the one index (in `variable`, the other index variables unset), with a fresh uv and project cache."""
    for name in pypi.INDEX_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, url)
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    monkeypatch.setenv("IMAGEMATRIX_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def index(tmp_path, monkeypatch):
    idx = Index(tmp_path / "index")
    idx.root.mkdir()
    for name, version in (("torch", "2.5.1"), ("tensordict", "0.6.2"), ("transformers", "4.49.0")):
        idx.add(name, version, PINS_UPLOADED)
    idx.add("vllm", "0.7.2", PINS_UPLOADED, requires=("leftpad",))
    idx.add("verl", "0.3.0.post1", PINS_UPLOADED, requires=("vllm==0.7.2; extra == 'vllm'",), extras=("vllm",))
    idx.add("leftpad", "1.0", "2025-01-02T00:00:00.000000Z")
    handler = type("BoundHandler", (Handler,), {"index": idx})
    with serving(partial(handler, directory=str(idx.root))) as server:
        use_index(monkeypatch, tmp_path, f"http://127.0.0.1:{server.server_address[1]}/simple")
        # the build tools' lock resolves uv itself, which this index does not hold
        monkeypatch.setattr(locks, "lock_tools", lambda matrix, refresh=False: "# build tools (not under test)\n")
        yield idx


def _verdict(m):
    from imagematrix.stages import validate

    report = validate.validate(m, list(m.rows), ROOT / "dockerfiles" / "patches")
    return ([(e.row.id, e.resolution, e.lock, e.packages) for e in report.rows], sorted(e.render() for e in report.errors),
            report.failures)


def test_a_lock_stays_as_the_index_moves_and_refresh_shows_what_changed(index, write_matrix, run):
    path = write_matrix(GOOD_MATRIX)
    lock = path.parent / "locks" / f"{ROW}.txt"
    result = run("lock", "--matrix", path, "--row", ROW)
    assert result.code == 0, result
    first = lock.read_text()
    assert f"# exclude-newer: {ERA}\n" in first  # a new row resolves as of its era
    assert lockfile.parse(first)["leftpad"].version == "1.0"
    m = matrix_mod.load(path)
    row = m.rows[0]
    assert locks.lock_status(m, row) == "ok"
    as_validate = resolve.resolve(row, exclude_newer=locks.resolution_time(m, row))  # what validate resolves
    verdict = _verdict(m)
    assert verdict[0] == [(ROW, "ok", "ok", 6)], verdict

    index.add("leftpad", "1.1", "2025-03-01T00:00:00.000000Z")  # released after the lock's cutoff

    assert locks.resolution_time(m, row) == ERA
    assert resolve.resolve(row, exclude_newer=locks.resolution_time(m, row)) == as_validate
    assert resolve.resolve(row, exclude_newer=locks.resolution_time(m, row), cache_first=False) == as_validate
    assert locks.lock_status(m, row) == "ok"
    assert _verdict(m) == verdict  # validate's verdict did not move with the index
    result = run("lock", "--matrix", path, "--row", ROW)
    assert result.code == 0 and f"unchanged locks/{ROW}.txt" in result.out, result
    assert lock.read_text() == first  # the same bytes

    result = run("lock", "--matrix", path, "--row", ROW, "--refresh")
    assert result.code == 0, result
    assert f"wrote locks/{ROW}.txt" in result.out and "  leftpad: 1.0 -> 1.1\n" in result.out, result
    assert [line for line in result.out.splitlines() if "->" in line] == ["  leftpad: 1.0 -> 1.1"]
    refreshed = lock.read_text()
    assert lockfile.parse(refreshed)["leftpad"].version == "1.1"
    assert locks.recorded_time(lock) > ERA
    result = run("lock", "--matrix", path, "--row", ROW)  # and the refreshed lock stays as it is
    assert result.code == 0 and "unchanged" in result.out and lock.read_text() == refreshed, result


def test_changes_lists_each_package_that_moved():
    old = ("a==1.0 \\\n    --hash=sha256:aa\nb==2.0 \\\n    --hash=sha256:bb\nc==3.0 \\\n    --hash=sha256:cc\n"
           "gone==1 \\\n    --hash=sha256:dd\n")
    new = ("a==1.1 \\\n    --hash=sha256:a1\nb==2.0 \\\n    --hash=sha256:bb\nc==3.0 \\\n    --hash=sha256:c2\n"
           "fresh==0.1 \\\n    --hash=sha256:ee\n")
    assert locks.changes(old, new) == ["a: 1.0 -> 1.1", "c: 3.0 (files changed)", "fresh: (none) -> 0.1",
                                       "gone: 1 -> (none)"]
    assert locks.changes(old, old) == []
