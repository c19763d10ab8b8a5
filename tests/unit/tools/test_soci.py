"""tools/soci.py (promote --soci): the commands that make and push a SOCI index, and what they leave behind."""

from __future__ import annotations

import subprocess

import pytest

from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.stages import promote
from imagematrix.tools import registry, soci

DIGEST = "sha256:" + "c" * 64


@pytest.fixture
def calls(monkeypatch):
    """Fake soci and ctr: record every command; `soci index list` answers DIGEST until `index rm` ran."""
    seen: list[list[str]] = []
    state = {"indexed": False}

    def run(cmd, **kwargs):
        seen.append(cmd)
        out = ""
        if "create" in cmd:
            state["indexed"] = True
        if cmd[-4:-2] == ["index", "list"] or "list" in cmd[-5:]:
            out = f"{DIGEST}\n" if state["indexed"] else ""
        if "rm" in cmd and "index" in cmd:
            state["indexed"] = False
        return subprocess.CompletedProcess(cmd, 0, out, "")

    monkeypatch.setattr(soci.subprocess, "run", run)
    monkeypatch.setattr(soci.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(registry, "credentials", lambda host: None)
    return seen


def test_index_fetches_creates_pushes_and_forgets(calls):
    assert soci.index("127.0.0.1:5000/ns/verl:cand", namespace="ns-x") == DIGEST
    words = [" ".join(c[1:]) for c in calls]
    fetch = next(i for i, w in enumerate(words) if "content fetch" in w)
    create = next(i for i, w in enumerate(words) if " create " in f" {w} ")
    push = next(i for i, w in enumerate(words) if " push " in f" {w} ")
    assert fetch < create < push
    assert "--plain-http" in calls[fetch] and "--plain-http" in calls[push]  # the registry on loopback
    assert all("--namespace" in c and "ns-x" in c for c in calls[:push + 1])
    assert any("index" in c and "rm" in c and "--ref" in c for c in calls[push:])  # soci's own copy goes
    assert any(c[-3:] == ["namespaces", "rm", "ns-x"] for c in calls)  # and the namespace with its content


def test_a_remote_registry_gets_https_and_the_docker_configs_credentials(calls, monkeypatch):
    monkeypatch.setattr(registry, "credentials", lambda host: ("u", "p"))
    soci.index("r.example/ns/verl:cand", namespace="ns-y")
    push = next(c for c in calls if "push" in c)
    assert "--plain-http" not in push and push[push.index("--user") + 1] == "u:p"


def test_a_failed_step_names_it_and_still_cleans_up(monkeypatch):
    seen = []

    def run(cmd, **kwargs):
        seen.append(cmd)
        return subprocess.CompletedProcess(cmd, 1 if "create" in cmd else 0, "", "no space left on device\n")

    monkeypatch.setattr(soci.subprocess, "run", run)
    monkeypatch.setattr(soci.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(registry, "credentials", lambda host: None)
    with pytest.raises(RuntimeFailure, match="soci create .* no space left"):
        soci.index("127.0.0.1:5000/ns/verl:cand", namespace="ns-z")
    assert any(c[-3:] == ["namespaces", "rm", "ns-z"] for c in seen)


def test_missing_soci_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(soci.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeFailure, match="setup --soci"):
        soci.require()


def test_promote_refuses_soci_with_zstd_only_before_touching_the_registry(monkeypatch):
    monkeypatch.setattr(soci, "require", lambda: pytest.fail("nothing may run"))
    with pytest.raises(InputError, match="gzip"):
        promote.promote(None, [], "127.0.0.1:5000/ns", None, compression="zstd", lazy=True)
