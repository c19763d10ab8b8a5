"""Issue 26, items 4, 5 and 7, at the one door every network read goes through (tools/http.fetch): a server that
drips its answer, sends more than the cap, lies about its Content-Length, garbles its status line, hangs up or
redirects out of http(s) ends in Refused or OSError, each one line, quickly; download and check_reachable turn
them into one line naming the URL (credentials redacted) and leave no file behind."""

from __future__ import annotations

import time
import urllib.error

import pytest

from imagematrix.tools import http
from tests.support import hostile, serving

BODY = b'{"answer": "' + b"x" * 40 + b'"}'


def _url(server, path: str = "/x") -> str:
    return f"http://127.0.0.1:{server.server_port}{path}"


@pytest.mark.parametrize("mode", ["drip", "drip-headers"])
def test_a_dripping_answer_is_cut_at_the_deadline_of_the_whole_request(mode):
    """Each byte comes well within the per-read timeout; the whole answer would take 10 s."""
    with serving(hostile(mode, BODY, every=0.2)) as server:
        started = time.monotonic()
        with pytest.raises(http.Refused, match=r"did not arrive within 1 s"):
            http.fetch(http.request(_url(server)), limit=1 << 20, deadline=1.0)
        assert time.monotonic() - started < 2.5


@pytest.mark.parametrize("mode", ["huge", "huge-unannounced"])
def test_an_answer_over_the_cap_is_refused(mode):
    with serving(hostile(mode, size=8 << 20)) as server:
        with pytest.raises(http.Refused, match=r"over the 1 MiB limit"):
            http.fetch(http.request(_url(server)), limit=1 << 20, deadline=10)


@pytest.mark.parametrize(("mode", "why"), [("short", "short of its Content-Length"), ("bad-status", "BadStatusLine"),
                                           ("hang-up", "closed connection|RemoteDisconnected")])
def test_a_broken_answer_is_an_oserror_saying_so(mode, why):
    """IncompleteRead, BadStatusLine and RemoteDisconnected are not all OSErrors: callers catch OSError."""
    with serving(hostile(mode, BODY)) as server:
        with pytest.raises(OSError, match=why) as caught:
            http.fetch(http.request(_url(server)), limit=1 << 20, deadline=10)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("location", "error"), [("ftp://127.0.0.1:9/x", http.Refused),
                                                 ("file:///etc/passwd", urllib.error.HTTPError)])  # urllib's own
def test_a_redirect_out_of_http_is_not_followed(location, error):
    with serving(hostile("redirect", location=location)) as server:
        with pytest.raises(error, match="not followed|not allowed"):
            http.fetch(http.request(_url(server)), limit=1 << 20, deadline=10)


def test_a_header_with_a_line_break_is_refused_before_sending():
    """A token with CR/LF must never split a header (http.client raises ValueError, which callers catch)."""
    request = http.request("http://127.0.0.1:9/x")
    request.add_unredirected_header("Authorization", "Bearer abc\r\nX-Injected: 1")
    with pytest.raises(ValueError):
        http.fetch(request, limit=1 << 20, deadline=5)


@pytest.mark.parametrize(("mode", "why"), [("huge-unannounced", "over the 1 MiB limit"),
                                           ("drip", "did not arrive within 1 s"),
                                           ("short", "short of its Content-Length")])
def test_a_download_that_fails_leaves_no_file_and_says_why_in_one_line(mode, why, tmp_path):
    with serving(hostile(mode, BODY, size=8 << 20)) as server:
        url = f"http://user:s3cret-pw@127.0.0.1:{server.server_port}/w.whl"
        sha, problem = http.download(url, tmp_path / "w.whl", limit=1 << 20, deadline=1.0)
    assert sha is None and why in problem and "\n" not in problem
    assert "s3cret" not in problem and f"http://***@127.0.0.1:{server.server_port}/w.whl" in problem
    assert list(tmp_path.iterdir()) == []


def test_a_download_from_a_local_mirror_is_capped_too(tmp_path):
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "w.whl").write_bytes(b"w" * 2000)
    sha, problem = http.download(f"file://{tmp_path}/mirror/w.whl", tmp_path / "a" / "w.whl", limit=4000)
    assert problem is None and (tmp_path / "a" / "w.whl").read_bytes() == b"w" * 2000
    sha, problem = http.download(f"file://{tmp_path}/mirror/w.whl", tmp_path / "b" / "w.whl", limit=1000)
    assert sha is None and "over the 1000 bytes limit" in problem and list((tmp_path / "b").iterdir()) == []


def test_check_reachable_gives_up_on_a_server_dripping_its_headers():
    with serving(hostile("drip-headers", BODY, every=0.2)) as server:
        started = time.monotonic()
        problem = http.check_reachable(_url(server, "/w.whl"), deadline=1.0)
        assert time.monotonic() - started < 2.5
    assert problem == f"{_url(server, '/w.whl')}: its answer did not arrive within 1 s"


def test_a_head_is_not_refused_for_the_size_it_announces():
    with serving(hostile("huge", size=8 << 20)) as server:
        assert http.check_reachable(_url(server, "/w.whl")) is None
