"""Issue 26, items 4, 5 and 7, at the package index: a simple page that drips, is huge, lies about its length, is
nested too deep or comes with a garbled status line, and a wheel whose METADATA inflates past the cap, whose HEAD has
no Content-Length or that is no zip at all. Each read ends in one RuntimeFailure line naming the page or the wheel
(the index's credentials redacted), within the patched deadline, and nothing is cached."""

from __future__ import annotations

import io
import time
import zipfile

import pytest

from imagematrix.model.errors import RuntimeFailure
from imagematrix.tools import http, pypi, pypi_releases
from tests.support import QuietHandler, hostile, serving

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
PAGE = b'{"meta": {"api-version": "1.1"}, "files": [{"filename": "demo-1.0-py3-none-any.whl", "url": "x"}]}'
SECRET = "s3cret-index-pw"


@pytest.fixture(autouse=True)
def small_caps(monkeypatch, tmp_path):
    monkeypatch.setattr(http, "PAGE_DEADLINE", 1.0)
    monkeypatch.setattr(http, "PAGE_LIMIT", 1 << 20)
    monkeypatch.setattr(http, "RANGE_DEADLINE", 1.0)
    monkeypatch.setattr(http, "MEMBER_LIMIT", 1 << 20)
    monkeypatch.setenv("IMAGEMATRIX_CACHE", str(tmp_path / "cache"))


def _index(server) -> str:
    return f"http://user:{SECRET}@127.0.0.1:{server.server_port}/simple"


def _one_line(caught, server) -> str:
    message = str(caught.value)
    assert "\n" not in message and SECRET not in message, message
    assert f"http://***@127.0.0.1:{server.server_port}/simple/demo/" in message, message
    return message


MODES = {"drip": "did not arrive within 1 s", "drip-headers": "did not arrive within 1 s",
         "huge": "over the 1 MiB limit", "huge-unannounced": "over the 1 MiB limit",
         "short": "short of its Content-Length", "bad-status": "BadStatusLine", "hang-up": "",
         "redirect": "not followed"}


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("reader", ["releases", "links", "wheel_urls"])
def test_a_hostile_index_page_is_one_line_naming_it_within_the_deadline(mode, reader):
    with serving(hostile(mode, PAGE, JSON_TYPE, every=0.2, size=8 << 20)) as server:
        started = time.monotonic()
        with pytest.raises(RuntimeFailure) as caught:
            if reader == "releases":
                pypi_releases.releases("demo", _index(server))
            elif reader == "links":
                pypi.links("demo", _index(server))
            else:
                pypi.wheel_urls("demo", "1.0", _index(server))
        assert time.monotonic() - started < 3
    assert MODES[mode] in _one_line(caught, server)


def test_a_json_page_nested_too_deep_is_not_a_simple_index_page():
    with serving(hostile("nested", content_type=JSON_TYPE)) as server:
        with pytest.raises(RuntimeFailure) as caught:
            pypi_releases.releases("demo", _index(server))
    assert "is not a simple-index page" in _one_line(caught, server)


# --- a wheel read by byte ranges --------------------------------------------------------------------------------


def _wheel(metadata: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as wheel:
        wheel.writestr("demo/__init__.py", "")
        wheel.writestr("demo-1.0.dist-info/METADATA", metadata)
    return buffer.getvalue()


def wheel_index(wheel: bytes, *, head_length: bool = True, ranges: bool = True):
    """An index with one page (demo 1.0) and its wheel, served by byte ranges when `ranges`, whole otherwise; its
    HEAD answer says the wheel's Content-Length only when `head_length`."""

    class Handler(QuietHandler):
        def do_HEAD(self):
            self.send_response(200)
            if head_length:
                self.send_header("Content-Length", str(len(wheel)))
            self.end_headers()

        def do_GET(self):
            if self.path.endswith("/demo/"):
                body, status, extra = b'<a href="demo-1.0-py3-none-any.whl">demo-1.0-py3-none-any.whl</a>', 200, {}
            elif ranges and self.headers.get("Range", "").startswith("bytes="):
                first, last = (int(n) for n in self.headers["Range"][len("bytes="):].split("-"))
                body, status = wheel[first:last + 1], 206
                extra = {"Content-Range": f"bytes {first}-{first + len(body) - 1}/{len(wheel)}"}
            else:
                body, status, extra = wheel, 200, {}
            self.send_response(status)
            for name, value in {"Content-Length": str(len(body)), **extra}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

    return serving(Handler)


def _metadata(server) -> bytes:
    return pypi.wheel_file("demo", "1.0", "demo-1.0.dist-info/METADATA")


def _cached(tmp_path) -> list:
    return list((tmp_path / "cache").rglob("METADATA"))


def test_a_metadata_that_inflates_past_the_cap_is_refused_and_not_cached(monkeypatch, tmp_path):
    """2 MiB of METADATA (a few KiB on the wire) against a 1 MiB cap on what a wheel's file inflates to."""
    with wheel_index(_wheel(b"Name: demo\n" + b" " * (2 << 20))) as server:
        monkeypatch.setenv("UV_DEFAULT_INDEX", _index(server))
        with pytest.raises(RuntimeFailure, match=r"inflates to \d+ bytes, over the 1 MiB limit") as caught:
            _metadata(server)
    assert "\n" not in str(caught.value) and SECRET not in str(caught.value)
    assert _cached(tmp_path) == []


def test_a_metadata_within_the_cap_is_read_and_cached(monkeypatch, tmp_path):
    with wheel_index(_wheel(b"Name: demo\nRequires-Dist: numpy\n")) as server:
        monkeypatch.setenv("UV_DEFAULT_INDEX", _index(server))
        assert b"Requires-Dist: numpy" in _metadata(server)
    assert len(_cached(tmp_path)) == 1


def test_a_head_without_content_length_takes_the_size_from_a_byte_range(monkeypatch):
    with wheel_index(_wheel(b"Name: demo\n"), head_length=False) as server:
        monkeypatch.setenv("UV_DEFAULT_INDEX", _index(server))
        assert _metadata(server) == b"Name: demo\n"


def test_a_wheel_with_no_size_anywhere_is_one_line(monkeypatch):
    with wheel_index(_wheel(b"Name: demo\n"), head_length=False, ranges=False) as server:
        monkeypatch.setenv("UV_DEFAULT_INDEX", _index(server))
        with pytest.raises(RuntimeFailure, match="gives no size") as caught:
            _metadata(server)
    assert "\n" not in str(caught.value) and SECRET not in str(caught.value)


def test_a_wheel_that_is_no_zip_is_one_line(monkeypatch, tmp_path):
    with wheel_index(b"<html>not a wheel</html>" * 10) as server:
        monkeypatch.setenv("UV_DEFAULT_INDEX", _index(server))
        with pytest.raises(RuntimeFailure, match="is not a wheel that can be read") as caught:
            _metadata(server)
    assert "\n" not in str(caught.value) and SECRET not in str(caught.value)
    assert _cached(tmp_path) == []


def test_all_the_ranges_read_from_one_wheel_are_capped(monkeypatch):
    monkeypatch.setattr(http, "WHEEL_READ_LIMIT", 100)
    with wheel_index(_wheel(b"Name: demo\n" + bytes(range(256)) * 64)) as server:
        monkeypatch.setenv("UV_DEFAULT_INDEX", _index(server))
        with pytest.raises(RuntimeFailure, match="more than 100 bytes of byte ranges"):
            _metadata(server)
