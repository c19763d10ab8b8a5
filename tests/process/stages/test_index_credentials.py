"""One index with credentials (issue 13, item 3): the index of UV_DEFAULT_INDEX, UV_INDEX_URL or PIP_INDEX_URL goes
to uv and to the project's own index reader (Requires-Python, upload times, wheel metadata) alike, with the
credentials of its URL (https://user:secret@host/simple), and those credentials are never printed: a dead index is
exit 1 naming it with its userinfo redacted. The real uv runs against local servers; nothing needs the network."""

from __future__ import annotations

import base64
import re
import shutil
import socket
from functools import partial

import pytest

from imagematrix.model import matrix as matrix_mod
from imagematrix.stages import locks, resolve
from imagematrix.tools import pypi, pypi_releases
from tests.conftest import GOOD_MATRIX, ROOT
from tests.process.stages.test_lock_refresh_local_index import ERA, ROW, Handler, pins_index, use_index
from tests.support import serving

SECRET = "s3cret-7d1f"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _use_index(monkeypatch, tmp_path, url: str, variable: str = "UV_INDEX_URL") -> None:
    use_index(monkeypatch, tmp_path, url, variable)
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(ROOT / "matrix.yaml", root / "matrix.yaml")
    shutil.copytree(ROOT / "locks", root / "locks")
    return root / "matrix.yaml"


@pytest.mark.parametrize("variable", pypi.INDEX_VARIABLES)
@pytest.mark.parametrize("uv_only", [True, False], ids=["uv", "with-requires-python"])
def test_a_dead_index_with_credentials_is_exit_1_naming_it_without_them(tmp_path, monkeypatch, run, project,
                                                                         variable, uv_only):
    port = _closed_port()
    _use_index(monkeypatch, tmp_path, f"http://user:{SECRET}@127.0.0.1:{port}/simple", variable)
    if uv_only:  # the Requires-Python check reads the index itself, and fails first otherwise
        monkeypatch.setattr(resolve.requires_python, "check", lambda row: [])
    row = "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311"
    lock = project.parent / "locks" / f"{row}.txt"
    before = lock.read_bytes()
    for command in ("validate", "lock"):
        result = run(command, "--matrix", project, "--row", row)
        assert result.code == 1, (command, result)
        # named: as http://***@host/... by this project, without the userinfo by uv
        assert re.search(rf"http://(\*\*\*@)?127\.0\.0\.1:{port}/simple", result.err), (command, result)
        assert SECRET not in result.out + result.err, (command, result)
        assert "cannot be resolved" not in result.err and "internal error" not in result.err, (command, result)
        assert lock.read_bytes() == before


def test_the_index_reader_names_a_dead_index_without_its_credentials(tmp_path, monkeypatch):
    from imagematrix.model.errors import RuntimeFailure

    port = _closed_port()
    _use_index(monkeypatch, tmp_path, f"https://user:{SECRET}@127.0.0.1:{port}/simple")
    for call in (lambda: pypi.versions("verl"), lambda: pypi_releases.releases("verl"),
                 lambda: pypi.requires_python("verl", "0.9.1")):
        with pytest.raises(RuntimeFailure) as info:
            call()
        assert f"https://***@127.0.0.1:{port}/simple/verl/" in str(info.value)
        assert SECRET not in str(info.value)


class AuthHandler(Handler):
    """The local index, answering 401 to a request without the expected Basic credentials."""

    expected = "Basic " + base64.b64encode(f"user:{SECRET}".encode()).decode()
    seen: list

    def do_GET(self):
        self.seen.append(self.headers.get("Authorization"))
        if self.headers.get("Authorization") != self.expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="index"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    do_HEAD = do_GET


@pytest.fixture
def private_index(tmp_path, monkeypatch):
    idx = pins_index(tmp_path / "index", "4.49.0")
    seen: list = []
    handler = type("BoundAuthHandler", (AuthHandler,), {"index": idx, "seen": seen})
    with serving(partial(handler, directory=str(idx.root))) as server:
        _use_index(monkeypatch, tmp_path, f"http://user:{SECRET}@127.0.0.1:{server.server_address[1]}/simple",
                   "PIP_INDEX_URL")
        monkeypatch.setattr(locks, "lock_tools", lambda matrix, refresh=False: "# build tools (not under test)\n")
        yield seen


def test_uv_and_the_index_reader_both_use_the_credentials_of_the_index_url(private_index, write_matrix, run):
    """The reader sent no credentials (urllib ignores URL userinfo; a URL with a password did not even parse), so
    on a private index the Requires-Python check failed and a new row lost its era (locked as of now)."""
    assert pypi.requires_python("verl", "0.3.0.post1") == ""
    assert [r.version for r in pypi_releases.releases("verl")] == ["0.3.0.post1"]
    path = write_matrix(GOOD_MATRIX)
    result = run("lock", "--matrix", path, "--row", ROW)
    assert result.code == 0, result
    lock = (path.parent / "locks" / f"{ROW}.txt").read_text()
    assert f"# exclude-newer: {ERA}\n" in lock  # the era, from the upload times the reader read
    assert SECRET not in result.out + result.err + lock
    assert locks.lock_status(matrix_mod.load(path), matrix_mod.load(path).rows[0]) == "ok"
    assert private_index and all(h == AuthHandler.expected for h in private_index if h)
