"""One redaction for every output: URL userinfo and secret-named variables (issue: an apt mirror's credentials in
the base stage's log and errors; HF_ENDPOINT=https://user:pass@... and *_PASSWD shown by doctor)."""

from __future__ import annotations

import importlib.util
import os
import sys

from imagematrix.model import secrets
from imagematrix.stages import builder
from imagematrix.tools import process
from tests.conftest import ROOT

PLANTED = "s3cr3t-planted"


def test_urls_and_free_text_lose_their_userinfo():
    assert secrets.redact_url(f"http://me:{PLANTED}@mirror:8080/debian") == "http://***@mirror:8080/debian"
    assert secrets.redact_url("https://deb.debian.org/debian") == "https://deb.debian.org/debian"
    text = f"E: Failed to fetch https://me:{PLANTED}@mirror/debian/dists/x  404\nGet:1 http://plain/ ok"
    assert PLANTED not in secrets.redact_text(text) and "https://***@mirror/debian" in secrets.redact_text(text)


def test_secret_names_show_only_that_they_are_set():
    env = {"HF_TOKEN": "t", "MY_PASSWD": "p", "NCCL_DEBUG": "WARN", "HF_ENDPOINT": f"https://u:{PLANTED}@hub"}
    assert secrets.redact_env(env) == {"HF_TOKEN": "<set>", "MY_PASSWD": "<set>", "NCCL_DEBUG": "WARN",
                                       "HF_ENDPOINT": "https://***@hub"}


def test_the_in_image_probe_redacts_the_same_way(monkeypatch):
    spec = importlib.util.spec_from_file_location("probe", ROOT / "imagematrix" / "in_image" / "probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    assert probe.SECRET_WORDS == secrets.SECRET_WORDS
    monkeypatch.setattr(os, "environ", {"HF_ENDPOINT": f"https://u:{PLANTED}@hub", "HF_HUB_PASSWD": "x",
                                        "VLLM_API_KEY": "k", "NCCL_DEBUG": "INFO"})
    found = probe.environment()
    assert PLANTED not in str(found) and found.get("HF_HUB_PASSWD", "<set>") == "<set>"
    assert {k: v for k, v in found.items()} == secrets.redact_env({k: v for k, v in os.environ.items() if k in found})


def test_logs_of_a_run_never_hold_url_credentials(tmp_path):
    log = tmp_path / "run.log"
    code = process.run_logged([sys.executable, "-c", f"print('fetching http://u:{PLANTED}@mirror/x')",
                               f"http://u:{PLANTED}@mirror"], log)
    assert code == 0 and PLANTED not in log.read_text() and "http://***@mirror/x" in log.read_text()


def test_the_base_stage_never_prints_the_apt_mirror_credentials(tmp_path, monkeypatch):
    """debootstrap is faked (it needs root and a mirror): it fails and prints the URL it was given."""
    import subprocess

    from imagematrix.model import matrix as matrix_mod
    from imagematrix.model.errors import RuntimeFailure

    row = matrix_mod.load(ROOT / "matrix.yaml").rows[0]
    said = []
    monkeypatch.setattr(builder.docker, "image_exists", lambda ref: False)
    monkeypatch.setattr(builder.debootstrap, "available", lambda: True)
    monkeypatch.setattr(builder.os, "geteuid", lambda: 0)  # debootstrap needs root (the lint job runs as `runner`)
    monkeypatch.setattr(builder.debootstrap, "bootstrap", lambda suite, target, mirror, proxy, **kw: subprocess.CompletedProcess(
        [], 1, f"I: Retrieving InRelease from {mirror}\n", f"E: Failed getting release file {mirror}/dists/x\n"))
    monkeypatch.setenv("IMAGEMATRIX_CACHE", str(tmp_path))
    inputs = builder.BuildInputs(apt_mirror=f"http://me:{PLANTED}@mirror.example/debian")
    try:
        builder.ensure_base(row, inputs, said.append)
        raise AssertionError("the fake debootstrap failed; ensure_base must say so")
    except RuntimeFailure as exc:
        assert PLANTED not in str(exc) and "http://***@mirror.example/debian" in str(exc)
    assert said and PLANTED not in " ".join(said)


def test_values_of_secret_named_variables_never_reach_a_log_or_a_message(tmp_path, monkeypatch):
    """A build step or a tool that echoes a secret variable's value (not a URL): the log and every message redacted
    with redact_text show *** instead; paths and short values of such names (SSH_AUTH_SOCK) stay readable."""
    words = {"HF_TOKEN": "tok", "MY_PASSWD": "pwd", "DB_PASSWORD": "pw", "REGISTRY_PASS": "p", "VLLM_API_KEY": "key",
             "AWS_SECRET_ACCESS_KEY": "sec", "PROXY_AUTH": "auth", "GOOGLE_CREDENTIAL": "cred", "HF_COOKIE": "c"}
    for name, tag in words.items():
        monkeypatch.setenv(name, f"{PLANTED}-{tag}-value")
    monkeypatch.setenv("SSH_AUTH_SOCK", "/tmp/ssh-agent.sock")
    monkeypatch.setenv("PLAIN_SETTING", f"{PLANTED}-plain")  # not secret-named: shown
    log = tmp_path / "run.log"
    script = "; ".join(f"print('{name}=' + os.environ['{name}'])" for name in words)
    code = process.run_logged([sys.executable, "-c", f"import os; {script}; print(os.environ['SSH_AUTH_SOCK'])"], log)
    text = log.read_text()
    assert code == 0 and "HF_TOKEN=***" in text and "/tmp/ssh-agent.sock" in text, text
    for tag in words.values():
        assert f"{PLANTED}-{tag}-value" not in text, text
    said = secrets.redact_text(f"login failed with {PLANTED}-pw-value; other {PLANTED}-plain")
    assert said == f"login failed with ***; other {PLANTED}-plain"
