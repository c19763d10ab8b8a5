"""uv and the wheel/metadata reader use one index: UV_DEFAULT_INDEX, UV_INDEX_URL or PIP_INDEX_URL (README said uv
honours PIP_INDEX_URL; it does not by itself, so the tool passes the index explicitly)."""

from __future__ import annotations

import subprocess

from imagematrix.tools import pypi, uv


def test_the_index_variables_in_their_order(monkeypatch):
    for name in pypi.INDEX_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert pypi.index_url() == "https://pypi.org/simple"
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.example/pypi/simple/")
    assert pypi.index_url() == "https://mirror.example/pypi/simple"
    monkeypatch.setenv("UV_DEFAULT_INDEX", "https://uv.example/simple")
    assert pypi.index_url() == "https://uv.example/simple"


def test_uv_is_given_the_same_index(monkeypatch):
    for name in pypi.INDEX_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.example/simple")
    seen = {}
    monkeypatch.setattr(uv.subprocess, "run", lambda cmd, **kw: seen.setdefault("cmd", cmd) and subprocess.CompletedProcess(cmd, 0, "", ""))
    monkeypatch.setattr(uv, "binary", lambda: "uv")
    uv.compile_requirements("verl==0.9.1\n", "3.12")
    assert seen["cmd"][seen["cmd"].index("--default-index") + 1] == "https://mirror.example/simple"
