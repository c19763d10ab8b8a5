"""Issue 26, items 4, 5 and 7, through build.py's entry point (cli.app.main, its top-level handler included): an
index that drips, sends a huge page, lies about its length, garbles its status line or nests its JSON too deep, seen
by `outdated`; a registry doing the same, seen by `plan`; an index variable with a bad port or IPv6 form. Each exits
with a one-line cause naming the server (its credentials redacted), quickly (the deadlines are patched down to 1 s
in-process), never a traceback nor an "internal error"."""

from __future__ import annotations

import time

import pytest

from imagematrix.cli import app
from imagematrix.tools import http, pypi
from tests.support import hostile, serving

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
SECRET = "s3cret-index-pw"
PAGE = b'{"meta": {"api-version": "1.1"}, "files": []}'


@pytest.fixture(autouse=True)
def small_caps(monkeypatch, tmp_path):
    for name in ("PAGE_DEADLINE", "MANIFEST_DEADLINE", "RANGE_DEADLINE"):
        monkeypatch.setattr(http, name, 1.0)
    monkeypatch.setattr(http, "PAGE_LIMIT", 1 << 20)
    monkeypatch.setattr(http, "MANIFEST_LIMIT", 1 << 20)
    monkeypatch.setenv("IMAGEMATRIX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    for name in pypi.INDEX_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def _main(capsys, *args: str) -> tuple[int, str, float]:
    started = time.monotonic()
    code = app.main(list(args))
    out, err = capsys.readouterr()
    text = out + err
    assert "Traceback" not in text and "internal error" not in text, text[-3000:]
    assert SECRET not in text
    return code, text, time.monotonic() - started


INDEX_MODES = {"drip": "did not arrive within 1 s", "huge-unannounced": "over the 1 MiB limit",
               "short": "short of its Content-Length", "bad-status": "BadStatusLine",
               "nested": "JSON nested too deep"}


@pytest.mark.parametrize("mode", sorted(INDEX_MODES))
def test_outdated_against_a_hostile_index_is_exit_1_naming_the_page(mode, monkeypatch, capsys):
    with serving(hostile(mode, PAGE, JSON_TYPE, every=0.2, size=8 << 20)) as server:
        index = f"http://user:{SECRET}@127.0.0.1:{server.server_port}/simple"
        monkeypatch.setenv("UV_DEFAULT_INDEX", index)
        code, text, took = _main(capsys, "outdated", "--limit", "1", "--json")
    assert code == 1, text[-2000:]
    lines = [line for line in text.splitlines() if f"http://***@127.0.0.1:{server.server_port}/simple/" in line]
    assert lines and INDEX_MODES[mode] in lines[0], text[-2000:]
    assert took < 8


@pytest.mark.parametrize("url", [f"http://user:{SECRET}@127.0.0.1:99999/simple", f"http://user:{SECRET}@[::1/simple"])
def test_outdated_with_an_index_url_that_cannot_be_read_is_bad_input(url, monkeypatch, capsys):
    monkeypatch.setenv("PIP_INDEX_URL", url)
    code, text, _ = _main(capsys, "outdated", "--limit", "1")
    assert code == 2, text[-2000:]
    assert "environment variable PIP_INDEX_URL" in text and "***@" in text, text[-2000:]


REGISTRY_MODES = {"drip": "did not arrive within 1 s", "huge": "over the 1 MiB limit",
                  "short": "short of its Content-Length", "bad-status": "BadStatusLine", "nested": "not a JSON object"}


@pytest.mark.parametrize("mode", sorted(REGISTRY_MODES))
def test_plan_against_a_hostile_registry_is_exit_1_naming_it(mode, tmp_path, capsys):
    with serving(hostile(mode, b" " * 40 + b"{}", every=0.2, size=8 << 20)) as server:
        host = f"127.0.0.1:{server.server_port}"
        code, text, took = _main(capsys, "plan", "--registry", f"{host}/ns", "--log-dir", str(tmp_path / "logs"))
    assert code == 1, text[-2000:]
    lines = [line for line in text.splitlines() if f"registry {host}" in line]
    assert lines and REGISTRY_MODES[mode] in lines[0], text[-2000:]
    assert took < 15
