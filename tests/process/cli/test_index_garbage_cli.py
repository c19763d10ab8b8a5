"""Issue 13, defect 7e: a package index (a mirror, a proxy) serving a page that is not UTF-8 or not a simple-index
page at all, seen through `outdated`, which reads the index's pages for every release: exit 1 with a one-line cause
naming the page, never a traceback nor an "internal error" (JSONDecodeError and AttributeError were)."""

from __future__ import annotations

import pytest

from imagematrix.cli import app
from tests.support import answering, serving

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
PAGES = {
    "json-not-utf8": (JSON_TYPE, b'\xff\xfe{"files": [\xe9'),
    "json-garbage-field": (JSON_TYPE, b'{"files": [{"filename": 5}], "name": "caf\xe9"}'),
    "json-a-list": (JSON_TYPE, b"[1, 2]"),
    "json-files-not-a-list": (JSON_TYPE, b'{"files": "verl-0.3.0.whl"}'),
    "json-upload-time-a-number": (JSON_TYPE, b'{"files": [{"filename": "verl-0.3.0-py3-none-any.whl", "upload-time": 5}]}'),
}


@pytest.fixture(params=sorted(PAGES))
def bad_index(request):
    content_type, body = PAGES[request.param]

    with serving(answering(body, content_type)) as server:
        yield f"http://127.0.0.1:{server.server_port}/simple"


def test_outdated_against_an_index_serving_garbage_is_exit_1(bad_index, tmp_path, monkeypatch, capsys):
    for name in ("UV_INDEX_URL", "PIP_INDEX_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("UV_DEFAULT_INDEX", bad_index)
    monkeypatch.setenv("IMAGEMATRIX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv"))
    code = app.main(["outdated", "--limit", "1", "--json"])
    out, err = capsys.readouterr()
    assert code == 1, (code, out[-1000:], err[-1000:])
    assert "internal error" not in err and "Traceback" not in err, err
    assert f"the index page {bad_index}/" in err and "is not a simple-index page" in err, err
