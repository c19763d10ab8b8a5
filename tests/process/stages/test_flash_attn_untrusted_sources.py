"""Issue 26, item 9: what a flash-attn mirror or PEP 503 index answers is not trusted.

- an index's links are followed only when, made absolute against the index page, they are http(s): a `file:///`
  link (or ftp:) to a file on this machine is never taken;
- a download is cached only once it is shown to be a wheel (a zip archive with a *.dist-info/WHEEL): an HTML page,
  a truncated or empty file, a zip without the metadata are refused and leave nothing in the cache folder.

A loopback HTTP server stands for the mirror and the index (tests/support.py)."""

from __future__ import annotations

import hashlib
import io
import zipfile

import pytest

from imagematrix.knowledge.flash_attn import wheel_spec
from imagematrix.model import matrix as matrix_mod
from imagematrix.stages import flash_attn
from tests.support import answering, serving

FA_ROW = "verl0.9.1-vllm0.24.0-torch2.11.0-cu130-py312-fa2.8.3"
WHEEL = "flash_attn-2.8.3+cu13torch2.11cxx11abiTRUE-cp312-cp312-linux_x86_64.whl"


def _zip(files: dict[str, str]) -> bytes:
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return data.getvalue()


GOOD = _zip({"flash_attn-2.8.3.dist-info/WHEEL": "Wheel-Version: 1.0\n", "flash_attn/__init__.py": ""})
NOT_WHEELS = {
    "an HTML page": b"<html><body>404 Not Found (served with 200)</body></html>",
    "an empty file": b"",
    "a truncated wheel": GOOD[: len(GOOD) // 2],
    "a zip without metadata": _zip({"flash_attn/__init__.py": ""}),
    "a zip whose WHEEL is not in a .dist-info": _zip({"WHEEL": "x", "flash_attn/WHEEL": "x"}),
}


@pytest.fixture
def row():
    return matrix_mod.load().select([FA_ROW])[0]


def _site(files: dict[str, bytes]):
    """A server answering each path in files with its bytes (404 elsewhere)."""
    def body(path: str) -> bytes:
        return files.get(path.split("?")[0], b"")
    return serving(answering(body, "application/octet-stream"))


@pytest.mark.parametrize("case", sorted(NOT_WHEELS))
def test_a_mirror_or_index_answer_that_is_no_wheel_is_not_cached(case, row, tmp_path):
    dest = tmp_path / "cache"
    dest.mkdir()
    data = NOT_WHEELS[case]
    sha = hashlib.sha256(data).hexdigest()
    page = f'<a href="/files/{WHEEL}#sha256={sha}">{WHEEL}</a>'.encode()
    with _site({f"/m/v2.8.3/{WHEEL}": data, "/simple/flash-attn/": page, f"/files/{WHEEL}": data}) as server:
        base = f"http://127.0.0.1:{server.server_port}"
        found, why = flash_attn.from_mirror(wheel_spec(row), f"{base}/m", dest)
        assert found is None and "not a wheel" in why, why
        found, why = flash_attn.from_indexes(wheel_spec(row), [f"{base}/simple"], dest)
        assert found is None and "not a wheel" in why, why
    assert list(dest.iterdir()) == []


def test_a_wheel_from_the_mirror_or_an_index_is_taken(row, tmp_path):
    dest = tmp_path / "cache"
    dest.mkdir()
    page = f'<a href="../../files/{WHEEL}#sha256={hashlib.sha256(GOOD).hexdigest()}">{WHEEL}</a>'.encode()
    with _site({f"/m/v2.8.3/{WHEEL}": GOOD, "/simple/flash-attn/": page, f"/files/{WHEEL}": GOOD}) as server:
        base = f"http://127.0.0.1:{server.server_port}"
        assert flash_attn.from_mirror(wheel_spec(row), f"{base}/m", dest)[0] == dest / WHEEL
        (dest / WHEEL).unlink()
        found, why = flash_attn.from_indexes(wheel_spec(row), [f"{base}/simple"], dest)  # a relative link, made absolute
        assert found == dest / WHEEL and found.read_bytes() == GOOD, why
    assert sorted(p.name for p in dest.iterdir()) == [WHEEL]


@pytest.mark.parametrize("link", ["file://{local}", "file://localhost{local}", "FILE://{local}",
                                  "ftp://127.0.0.1:9/files/" + WHEEL])
def test_an_index_link_that_is_not_http_is_never_followed(link, row, tmp_path):
    local = tmp_path / "secret" / WHEEL  # a wheel on this machine, which a file: link would hand over
    local.parent.mkdir()
    local.write_bytes(GOOD)
    dest = tmp_path / "cache"
    dest.mkdir()
    page = f'<a href="{link.format(local=local)}">{WHEEL}</a>'.encode()
    with _site({"/simple/flash-attn/": page}) as server:
        found, why = flash_attn.from_indexes(wheel_spec(row), [f"http://127.0.0.1:{server.server_port}/simple"], dest)
    assert found is None and "not http(s): not followed" in why, why
    assert list(dest.iterdir()) == []
