"""Issue 26, item 7: an index URL with a bad port or a broken IPv6 form. The redaction runs inside error handlers,
so it must never raise (it did: urllib's port and IPv6 checks raised ValueError inside the handler); the index
variable that holds such a URL is bad input naming the variable, never its password; an IPv6 index keeps its
brackets and port when its credentials go into the Authorization header."""

from __future__ import annotations

import base64

import pytest

from imagematrix.model import secrets
from imagematrix.model.errors import InputError
from imagematrix.tools import http, pypi

SECRET = "s3cret-index-pw"
BAD = {
    "port-out-of-range": f"http://user:{SECRET}@127.0.0.1:99999/simple",
    "port-not-a-number": f"http://user:{SECRET}@mirror.example:abc/simple",
    "ipv6-unclosed": f"http://user:{SECRET}@[::1/simple",
    "ipv6-garbage": f"https://user:{SECRET}@[not-ipv6]]:8443/simple",
    "nfkc-netloc": f"http://user:{SECRET}@mirror\uff03example/simple",
}


@pytest.mark.parametrize("url", sorted(BAD.values()))
def test_redaction_is_total(url):
    shown = secrets.redact_url(url)
    assert SECRET not in shown and "***@" in shown, shown


@pytest.mark.parametrize(("url", "shown"), [
    (f"http://user:{SECRET}@[::1]:8080/simple", "http://***@[::1]:8080/simple"),
    (f"https://user:{SECRET}@mirror.example:99999/simple", "https://***@mirror.example:99999/simple"),
    (f"https://u%40corp:{SECRET}@mirror.example/simple", "https://***@mirror.example/simple"),
    ("https://mirror.example/simple?x=1#y", "https://mirror.example/simple?x=1#y"),
])
def test_redaction_keeps_the_host_as_written(url, shown):
    assert secrets.redact_url(url) == shown


@pytest.mark.parametrize("name", sorted(BAD))
def test_an_index_variable_holding_a_bad_url_is_bad_input_naming_it(name, monkeypatch):
    for variable in pypi.INDEX_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("PIP_INDEX_URL", BAD[name])
    with pytest.raises(InputError) as caught:
        pypi.index_url()
    assert caught.value.where == "environment variable PIP_INDEX_URL"
    assert SECRET not in caught.value.render() and "\n" not in caught.value.message


@pytest.mark.parametrize("url", ["ftp://mirror.example/simple", "mirror.example/simple", "http:///simple",
                                 "http://mirror.example/sim ple"])
def test_an_index_url_that_is_no_http_url_is_bad_input(url, monkeypatch):
    for variable in pypi.INDEX_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("UV_DEFAULT_INDEX", url)
    with pytest.raises(InputError, match="UV_DEFAULT_INDEX"):
        pypi.index_url()


def test_the_message_of_a_url_urllib_cannot_split_never_quotes_its_password():
    with pytest.raises(ValueError) as caught:
        http.request(BAD["nfkc-netloc"])
    assert SECRET not in str(caught.value)


def test_an_ipv6_index_keeps_its_brackets_and_port_in_the_request():
    request = http.request(f"http://user:{SECRET}@[::1]:8080/simple/demo/")
    assert request.full_url == "http://[::1]:8080/simple/demo/" and request.host == "[::1]:8080"
    assert request.unredirected_hdrs["Authorization"] == "Basic " + base64.b64encode(f"user:{SECRET}".encode()).decode()
