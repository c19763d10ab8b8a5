"""A simple-index page that is not UTF-8 (a mirror serving latin-1) is read, not a UnicodeDecodeError."""

from __future__ import annotations

import pytest

from imagematrix.tools import pypi
from tests.support import answering, serving

# "café" in latin-1: byte 0xe9 is not valid UTF-8
PAGE = ('<html><body><h1>Links for caf\xe9</h1>\n'
        '<a href="demo-1.0-py3-none-any.whl#sha256=abc" data-requires-python="&gt;=3.9">demo-1.0-py3-none-any.whl</a>\n'
        '</body></html>').encode("latin-1")


@pytest.fixture
def index():
    with serving(answering(PAGE, "text/html; charset=latin-1")) as server:
        yield f"http://127.0.0.1:{server.server_port}/simple"


def test_files_of_a_latin1_page(index):
    # absolute URLs, which can be fetched (the page links relatively; they were returned as they stood)
    assert pypi._files("demo", index) == [(f"{index}/demo/demo-1.0-py3-none-any.whl", ">=3.9")]
    assert pypi.wheel_urls("demo", "1.0", index) == [f"{index}/demo/demo-1.0-py3-none-any.whl"]


def test_links_of_a_latin1_page(index):
    assert pypi.links("demo", index) == [(f"{index}/demo/demo-1.0-py3-none-any.whl", "abc")]
