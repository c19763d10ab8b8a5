"""Real builds through `build.py build`: real dockerd, BuildKit, registry and PyPI (marked `slow`).

.ci/run runs `build.py setup` first (dockerd, buildx, registry, debootstrap). The verl 0.3 + vLLM 0.7.2 row is
built for real (about 5 GB of wheels), its smoke tests check the three vLLM patches inside the image, and only
then it is pushed. A second row sharing its torch stage is the small, fast build.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from imagematrix.model import labels, tags
from imagematrix.stages import publish
from imagematrix.tools import docker, host
from tests import support
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

ROW1 = "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311"
FAST = "verl0.3-vllm0.7.2-transformers4.48.3"
BROKEN = "verl0.3-vllm0.7.2-broken-tokenizers"
TOKEN = f"plantedtoken{uuid.uuid4().hex}"
HOST_CA = "/etc/ssl/certs/ca-certificates.crt"


@pytest.fixture(scope="module")
def ready():
    if not docker.daemon_running() or not host.registry_up():
        pytest.skip("needs a running Docker daemon and the embedded registry: run `python build.py setup`")
    return docker.cli()


@pytest.fixture(scope="module")
def registry():
    """A namespace of its own per run, so a build is never skipped because an earlier run pushed it."""
    return support.namespace("test")


@pytest.fixture(scope="module")
def built(ready, registry, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("logs")
    cmd = [sys.executable, "build.py", "build", "--row", ROW1, "--registry", registry, "--log-dir", str(log_dir),
           "--ca-cert", HOST_CA, "--no-proxy", f"{TOKEN}.invalid",
           "--flash-attn-mirror", f"https://user:{TOKEN}@mirror.invalid/fa"]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.monotonic() - started
    print(f"build of {ROW1}: {seconds:.0f} s")
    yield proc, log_dir, seconds
    for tag in (ROW1, "vllm0.7.2"):
        subprocess.run([ready, "rmi", f"{tags.repository(registry)}:{tag}"], capture_output=True)


def test_real_row_is_built_tested_and_pushed(built, registry):
    proc, log_dir, _ = built
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "pushed" in proc.stdout
    remote = publish.remote_labels(registry, ROW1)
    assert remote["io.imagematrix.pin.vllm"] == "0.7.2"
    assert remote["io.imagematrix.patches"].count("vllm-") == 3
    assert publish.remote_labels(registry, "vllm0.7.2")[labels.INPUT_DIGEST] == remote[labels.INPUT_DIGEST]
    smoke = (log_dir / ROW1 / "smoke.log").read_text()
    assert re.search(r"(\d+) passed", smoke) and " failed" not in smoke
    manifest = (log_dir / ROW1 / "manifest.json").read_text()
    assert '"vllm==0.7.2"' in manifest and '"sha256:' in manifest


def test_rerun_with_nothing_changed_skips_in_seconds(built, registry, tmp_path):
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "build.py", "build", "--row", ROW1, "--registry", registry,
                           "--log-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0 and "skipped" in proc.stdout, proc.stdout
    assert time.monotonic() - started < 30


def test_rebuild_builds_tests_and_pushes_a_row_the_registry_already_has(built, registry, tmp_path):
    """--rebuild (the CI schedule): nothing changed, yet the row goes through build, smoke tests and push again."""
    proc = subprocess.run([sys.executable, "build.py", "build", "--row", ROW1, "--registry", registry, "--rebuild",
                           "--log-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0 and "pushed" in proc.stdout and "skipped" not in proc.stdout, proc.stdout[-2000:]
    assert re.search(r"(\d+) passed", (tmp_path / ROW1 / "smoke.log").read_text())
    assert (tmp_path / ROW1 / "sbom.cdx.json").is_file() and (tmp_path / ROW1 / "provenance.json").is_file()


def _proxy_certs(cli: str, image: str) -> list[bytes]:
    """PEM bodies in the host CA bundle that Debian's ca-certificates does not ship: the proxy's CA."""
    ours = subprocess.run([cli, "run", "--rm", "--entrypoint", "cat", image, HOST_CA],
                          capture_output=True).stdout
    host = open(HOST_CA, "rb").read()
    blocks = re.findall(rb"-----BEGIN CERTIFICATE-----\n(.*?)-----END CERTIFICATE-----", host, re.S)
    return [b.replace(b"\n", b"")[:120] for b in blocks if b.replace(b"\n", b"")[:120] not in ours.replace(b"\n", b"")]


def test_no_build_input_persists_in_layers_config_or_history(built, ready, registry):
    proc, _, _ = built
    assert proc.returncode == 0
    image = f"{tags.repository(registry)}:{ROW1}"
    needles = [TOKEN.encode(), b"mirror.invalid"]
    proxy = _proxy_certs(ready, image)
    # each needle is searched in base64 as it appears in PEM, without line breaks: use the first 64 chars,
    # which sit on one PEM line
    needles += [p[:64] for p in proxy]
    history = subprocess.run([ready, "history", "--no-trunc", image], capture_output=True).stdout
    config = subprocess.run([ready, "image", "inspect", image], capture_output=True).stdout
    for needle in needles:
        assert needle not in history and needle not in config
    save = subprocess.Popen([ready, "save", image], stdout=subprocess.PIPE)
    found, tail, total = set(), b"", 0
    for chunk in iter(lambda: save.stdout.read(1 << 24), b""):
        window = tail + chunk
        found |= {n for n in needles if n in window}
        tail = window[-256:]
        total += len(chunk)
    assert save.wait() == 0 and total > 1_000_000_000
    assert not found, f"build inputs found in the image: {found}"
    print(f"scanned {total / 1e9:.1f} GB for {len(needles)} needles ({len(proxy)} proxy CA certificate(s))")


def test_failing_row_is_not_pushed_and_the_next_row_shares_the_torch_stage(built, ready, registry, tmp_path):
    """Two new rows in one `build`: the first forces a tokenizers that its transformers rejects, so its smoke tests
    fail and nothing of it is pushed; the second still builds, on the cached os and torch stages, and is pushed."""
    shutil.copy(ROOT / "matrix.yaml", tmp_path / "matrix.yaml")
    shutil.copytree(ROOT / "locks", tmp_path / "locks")
    with open(tmp_path / "matrix.yaml", "a") as f:
        f.write(f'  - id: {BROKEN}\n    verl: "0.3.0.post1"\n    vllm: "0.7.2"\n    torch: "2.5.1"\n'
                '    cuda: "12.4"\n    tensordict: "0.6.2"\n    transformers: "4.49.0"\n'
                '    overrides:\n      tokenizers:\n        version: "0.20.3"\n'
                '        reason: forced below the range transformers 4.49 declares, to test a failing row\n')
        f.write(f'  - id: {FAST}\n    verl: "0.3.0.post1"\n    vllm: "0.7.2"\n    torch: "2.5.1"\n'
                '    cuda: "12.4"\n    tensordict: "0.6.2"\n    transformers: "4.48.3"\n')
    matrix = str(tmp_path / "matrix.yaml")
    for cmd in (["lock", "--row", BROKEN, "--row", FAST], ["render", "--row", BROKEN, "--row", FAST]):
        assert subprocess.run([sys.executable, "build.py", *cmd, "--matrix", matrix], cwd=ROOT).returncode == 0
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "build.py", "build", "--row", BROKEN, "--row", FAST, "--matrix", matrix,
                           "--registry", registry, "--log-dir", str(tmp_path / "logs")],
                          cwd=ROOT, capture_output=True, text=True)
    print(f"build of {BROKEN} and {FAST}: {time.monotonic() - started:.0f} s")
    repo = tags.repository(registry)
    try:
        assert proc.returncode == 1, proc.stdout[-3000:]
        assert f"{BROKEN}: failed at smoke" in proc.stdout and f"{FAST}: pushed" in proc.stdout
        assert "1 of 2 row(s) failed" in proc.stderr
        smoke = (tmp_path / "logs" / BROKEN / "smoke.log").read_text()
        assert "tokenizers" in smoke and " failed" in smoke
        assert publish.remote_labels(registry, BROKEN) is None  # never pushed under its final tag
        assert publish.remote_labels(registry, FAST)["io.imagematrix.pin.transformers"] == "4.48.3"
        # FAST is the last vLLM 0.7.2 row of this matrix, so the alias moved to it
        assert publish.remote_labels(registry, "vllm0.7.2")["io.imagematrix.row"] == FAST
        build_log = (tmp_path / "logs" / FAST / "build.log").read_text()
        torch_step = re.search(r"#\d+ \[torch 1/1\] RUN .*\n#\d+ (\S+)", build_log)
        assert torch_step and torch_step.group(1) == "CACHED", build_log[-3000:]
    finally:
        for ref in (f"{repo}:{FAST}", f"{repo}:vllm0.7.2"):
            subprocess.run([ready, "rmi", ref], capture_output=True)
        subprocess.run(f"{ready} images -q --filter reference='{repo}:candidate-{BROKEN}-*' | xargs -r {ready} rmi",
                       shell=True, capture_output=True)


def test_gpu_suite_starts_inside_the_image(built, ready, registry):
    """Image mode of the GPU suite, end to end on this GPU-less machine: pytest and the suite are mounted into the
    real image and collected; with no GPU each test must fail (never skip) with the `--gpus all` advice."""
    from imagematrix.model import matrix as matrix_mod
    from imagematrix.stages import smoke_gpu

    m = matrix_mod.load(ROOT / "matrix.yaml")
    row = m.select([ROW1])[0]
    cmd = smoke_gpu.docker_command(ready, f"{tags.repository(registry)}:{ROW1}", smoke_gpu.row_json(m, row),
                             smoke_gpu.pytest_dir(row.python))
    del cmd[cmd.index("--gpus"):cmd.index("--gpus") + 2]  # this machine has no GPU (and no NVIDIA runtime)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert "sees no CUDA device" in proc.stdout and "--gpus all" in proc.stdout
    assert re.search(r"\b\d+ error", proc.stdout) and " skipped" not in proc.stdout.splitlines()[-1]


def test_preflight_warns_at_container_start_and_never_blocks(built, ready, registry, tmp_path):
    """The entrypoint runs the preflight, then the command. No GPU here: a stand-in nvidia-smi reports a T4 and a
    B200, as the NVIDIA container toolkit's would; the command must run either way."""
    image = f"{tags.repository(registry)}:{ROW1}"
    archs = subprocess.run([ready, "run", "--rm", image, "cat", "/opt/imagematrix/torch-archs.txt"],
                           capture_output=True, text=True)
    assert archs.stdout.split() == ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]
    for gpu, warning in (("Tesla T4, 7.5", "no bfloat16"), ("NVIDIA B200, 10.0", "no kernel image is available")):
        smi = tmp_path / "nvidia-smi"
        smi.write_text(f"#!/bin/sh\necho '{gpu}'\n")
        smi.chmod(0o755)
        proc = subprocess.run([ready, "run", "--rm", "-v", f"{smi}:/usr/local/bin/nvidia-smi:ro", image,
                               "python", "-c", "print(42)"], capture_output=True, text=True)
        assert proc.returncode == 0 and proc.stdout.strip() == "42" and warning in proc.stderr, proc.stderr
        quiet = subprocess.run([ready, "run", "--rm", "-e", "IMAGEMATRIX_PREFLIGHT=0", "-v",
                                f"{smi}:/usr/local/bin/nvidia-smi:ro", image, "python", "-c", "print(42)"],
                               capture_output=True, text=True)
        assert quiet.stdout.strip() == "42" and quiet.stderr == ""


def test_doctor_on_the_built_image(built, registry):
    proc = subprocess.run([sys.executable, "build.py", "doctor", "--json", "--image", f"{tags.repository(registry)}:{ROW1}"],
                          cwd=ROOT, capture_output=True, text=True)
    import json

    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["nearest_row"] == ROW1 and report["findings"] == [], proc.stdout[-2000:]
    assert report["facts"]["torch"]["archs"][-1] == "sm_90"
