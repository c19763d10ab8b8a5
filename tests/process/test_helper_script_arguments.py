"""Issue 26, item 9: the helper scripts run by hand or by a build (imagematrix/in_image/patch_apply.py,
imagematrix/suites/gpu/wheelhouse.py pack/unpack, imagematrix/suites/gpu/run_host.sh) answer bad arguments with their usage line
and exit 2, before any work, never with a traceback; `wheelhouse.py pack --part-mib 0` (which cut nothing into
parts, forever) is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from imagematrix.in_image import patch_apply
from imagematrix.model import paths
from tests.conftest import ROOT

WHEELHOUSE = paths.SUITES / "gpu" / "wheelhouse.py"
RUN_HOST = paths.SUITES / "gpu" / "run_host.sh"
LOCK = ROOT / "locks" / "verl0.9.1-vllm0.24.0-torch2.11.0-cu130-py312.txt"
PATCH = {"id": "demo", "package": "vllm", "version": "0.7.2", "file": "vllm/x.py", "scope": None,
         "anchor": "^a = 1\\n", "replacement": "a = 2\\n", "check": "a = 2"}
MANIFEST = {"lock": "x.txt", "host": [], "omitted": [], "lock_versions": {}, "wheels": {}}


def _write(path, content) -> str:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def _dir_with_manifest(tmp_path, manifest) -> str:
    folder = tmp_path / "parts"
    folder.mkdir()
    _write(folder / "manifest.json", manifest if isinstance(manifest, (str, bytes)) else json.dumps(manifest))
    return str(folder)


CASES = {  # name -> (program, arguments made of tmp_path)
    "patch_apply: no such patches file": (
        "patch_apply", lambda t: [str(t / "none.json"), "--record", str(t / "r.json")]),
    "patch_apply: patches not JSON": (
        "patch_apply", lambda t: [_write(t / "p.json", "[{"), "--record", str(t / "r.json")]),
    "patch_apply: patches not UTF-8": (
        "patch_apply", lambda t: [_write(t / "p.json", b"[\"\xff\"]"), "--record", str(t / "r.json")]),
    "patch_apply: patches nested too deeply": (
        "patch_apply", lambda t: [_write(t / "p.json", "[" * 100_000), "--record", str(t / "r.json")]),
    "patch_apply: patches an object": (
        "patch_apply", lambda t: [_write(t / "p.json", json.dumps(PATCH)), "--record", str(t / "r.json")]),
    "patch_apply: a patch that is a string": (
        "patch_apply", lambda t: [_write(t / "p.json", '["demo"]'), "--record", str(t / "r.json")]),
    "patch_apply: a patch without its anchor": (
        "patch_apply", lambda t: [_write(t / "p.json", json.dumps([{**PATCH, "anchor": None}])),
                                  "--record", str(t / "r.json")]),
    "patch_apply: an anchor that is no regex": (
        "patch_apply", lambda t: [_write(t / "p.json", json.dumps([{**PATCH, "anchor": "(x"}])),
                                  "--record", str(t / "r.json")]),
    "patch_apply: --record a directory": (
        "patch_apply", lambda t: [_write(t / "p.json", "[]"), "--record", str(t)]),
    "patch_apply: no --record": ("patch_apply", lambda t: [_write(t / "p.json", "[]")]),
    "wheelhouse pack: no such lock": ("wheelhouse", lambda t: ["pack", str(t / "none.txt"), "--out", str(t / "o")]),
    "wheelhouse pack: a lock that is none": (
        "wheelhouse", lambda t: ["pack", _write(t / "l.txt", "torch\nnot a lock\n"), "--out", str(t / "o")]),
    "wheelhouse pack: an empty lock": ("wheelhouse", lambda t: ["pack", _write(t / "l.txt", ""), "--out", str(t / "o")]),
    "wheelhouse pack: a lock not UTF-8": (
        "wheelhouse", lambda t: ["pack", _write(t / "l.txt", b"torch==2.0\xff\n"), "--out", str(t / "o")]),
    "wheelhouse pack: --part-mib 0": ("wheelhouse", lambda t: ["pack", str(LOCK), "--out", str(t / "o"),
                                                               "--part-mib", "0"]),
    "wheelhouse pack: --part-mib -1": ("wheelhouse", lambda t: ["pack", str(LOCK), "--out", str(t / "o"),
                                                                "--part-mib", "-1"]),
    "wheelhouse pack: --part-mib x": ("wheelhouse", lambda t: ["pack", str(LOCK), "--part-mib", "x"]),
    "wheelhouse pack: --out a file": ("wheelhouse", lambda t: ["pack", str(LOCK), "--out", _write(t / "f", "")]),
    "wheelhouse unpack: no such folder": (
        "wheelhouse", lambda t: ["unpack", str(t / "none"), "--site", str(t / "s"), "--results", str(t / "r")]),
    "wheelhouse unpack: no manifest": (
        "wheelhouse", lambda t: ["unpack", str(t), "--site", str(t / "s"), "--results", str(t / "r")]),
    "wheelhouse unpack: manifest not JSON": (
        "wheelhouse", lambda t: ["unpack", _dir_with_manifest(t, "{"), "--site", str(t / "s"),
                                 "--results", str(t / "r")]),
    "wheelhouse unpack: manifest a list": (
        "wheelhouse", lambda t: ["unpack", _dir_with_manifest(t, "[]"), "--site", str(t / "s"),
                                 "--results", str(t / "r")]),
    "wheelhouse unpack: manifest without wheels": (
        "wheelhouse", lambda t: ["unpack", _dir_with_manifest(t, {**MANIFEST, "wheels": None}), "--site",
                                 str(t / "s"), "--results", str(t / "r")]),
    "wheelhouse unpack: a wheel name that climbs out": (
        "wheelhouse", lambda t: ["unpack", _dir_with_manifest(t, {**MANIFEST, "wheels": {"../../x.whl": {
            "sha256": "0" * 64, "size": 1}}}), "--site", str(t / "s"), "--results", str(t / "r")]),
    "wheelhouse unpack: --site a file": (
        "wheelhouse", lambda t: ["unpack", _dir_with_manifest(t, MANIFEST), "--site", _write(t / "f", ""),
                                 "--results", str(t / "r")]),
    "wheelhouse: no verb": ("wheelhouse", lambda t: []),
    "run_host.sh: no such row.json": ("run_host", lambda t: [str(t / "row.json"), str(t / "out")]),
    "run_host.sh: no arguments": ("run_host", lambda t: []),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_arguments_get_the_usage_line_and_exit_2(case, tmp_path):
    program, arguments = CASES[case]
    work = tmp_path / "work"
    work.mkdir()
    command = {"patch_apply": [sys.executable, patch_apply.__file__], "wheelhouse": [sys.executable, str(WHEELHOUSE)],
               "run_host": ["bash", str(RUN_HOST)]}[program] + arguments(work)
    before = sorted(p.name for p in work.rglob("*"))
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "usage:" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert sorted(p.name for p in work.rglob("*")) == before  # nothing done: no out, site or record folder
