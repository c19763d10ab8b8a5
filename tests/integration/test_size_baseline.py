"""Size baseline against the real Docker daemon (issue 17, item 5): two tiny images that differ in one layer (1 MB
and 20 MB) go through the build's size stage (`sizes.check_image` / `record_note`, as `build.py build` runs
them between smoke and push): the first records the baseline, the second, with the same input digest, fails naming
the layer that grew; with another input digest it records instead. A row's real build adds nothing to what is
checked here."""

from __future__ import annotations

import json
import types
import uuid

import pytest

from imagematrix.model.errors import RuntimeFailure
from imagematrix.stages import sizes
from imagematrix.tools import docker

ROW = "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311"
DIGEST = "sha256:" + "1" * 64
LOCAL_BASE = "imagematrix-base:bookworm"  # bootstrapped by the first `build.py build` of a debootstrap row

# name: (Dockerfile, the instruction of the layer that holds the payload). The payload's size comes from a file of
# the context, never from a build arg: an argument's value is part of a RUN's recorded instruction.
VARIANTS = {
    "scratch-copy": ("FROM scratch\nCOPY base.bin /base.bin\nCOPY payload.bin /payload.bin\n",
                     "COPY payload.bin /payload.bin"),
    "base-run": (f"FROM {LOCAL_BASE}\nCOPY n.txt /n.txt\nRUN head -c $(cat /n.txt) /dev/zero > /payload.bin\n",
                 "RUN head -c $(cat /n.txt) /dev/zero > /payload.bin"),
}


@pytest.fixture
def daemon():
    if not docker.daemon_running():
        pytest.skip("needs a running Docker daemon: run `python build.py setup`")


@pytest.fixture
def build_tiny(tmp_path, daemon):
    built = []

    def build(variant: str, payload: int) -> str:
        dockerfile, _ = VARIANTS[variant]
        ctx = tmp_path / f"ctx-{variant}-{payload}"
        ctx.mkdir()
        (ctx / "base.bin").write_bytes(b"b" * 5_000_000)
        (ctx / "payload.bin").write_bytes(b"p" * payload)
        (ctx / "n.txt").write_text(f"{payload:012d}")  # the same width: that layer keeps its size
        (ctx / "Dockerfile").write_text(dockerfile)
        tag = f"imagematrix-size-test:{variant}-{payload}-{uuid.uuid4().hex[:6]}"
        proc = docker.run("build", "--quiet", "--tag", tag, str(ctx))
        assert proc.returncode == 0, proc.stderr[-2000:]
        built.append(tag)
        return tag

    yield build
    for tag in built:
        docker.run("rmi", tag)


@pytest.mark.parametrize("variant", VARIANTS)
def test_an_image_grown_past_the_margin_with_the_same_inputs_fails_naming_the_layer(variant, tmp_path, build_tiny):
    if variant == "base-run" and not docker.image_exists(LOCAL_BASE):
        pytest.skip(f"needs {LOCAL_BASE} (bootstrapped by `build.py build` of a debootstrap:bookworm row)")
    matrix = types.SimpleNamespace(root=tmp_path / "project")
    row = types.SimpleNamespace(id=ROW)
    logs = tmp_path / "logs"
    logs.mkdir()
    small, big = build_tiny(variant, 1_000_000), build_tiny(variant, 20_000_000)

    # no baseline yet: the first image is measured and recorded (after its push)
    verdict, measured = sizes.check_image(matrix, row, DIGEST, small, logs, sizes.DEFAULT_MARGIN, False)
    assert verdict.action == "record" and "no size baseline" in verdict.message
    note = sizes.record_note(matrix, verdict, measured, write_it=True)
    path = tmp_path / "project" / "sizes" / f"{ROW}.json"
    assert str(path) in note
    recorded = json.loads(path.read_text())
    assert recorded["input_digest"] == DIGEST and recorded["size_bytes"] == docker.image_size(small)
    assert any(layer["size_bytes"] == 1_000_000 for layer in recorded["layers"])
    assert json.loads((logs / "size.json").read_text())["size_bytes"] == recorded["size_bytes"]

    # the same image again: within the margin, the baseline stays as it was
    verdict, _ = sizes.check_image(matrix, row, DIGEST, small, logs, sizes.DEFAULT_MARGIN, False)
    assert verdict.action == "pass"
    assert sizes.record_note(matrix, verdict, measured, write_it=True).startswith("size: ")
    assert json.loads(path.read_text()) == recorded

    # 19 MB more with the same input digest: past 5% of ~6 MB (or of the 200 MB base): fails, naming the layer
    with pytest.raises(RuntimeFailure) as failure:
        sizes.check_image(matrix, row, DIGEST, big, logs, sizes.DEFAULT_MARGIN, False)
    text = str(failure.value)
    grown = [line for line in text.splitlines() if line.lstrip().startswith("+")]
    _, instruction = VARIANTS[variant]
    assert len(grown) == 1 and "+19.0 MB" in grown[0] and "1.0 MB -> 20.0 MB" in grown[0], text
    assert grown[0].rstrip().endswith(instruction), text
    assert "nothing pushed" in text and "--record-size" in text and big in text
    assert json.loads(path.read_text()) == recorded  # a failure records nothing

    # a wide enough margin lets it through
    verdict, _ = sizes.check_image(matrix, row, DIGEST, big, logs, 100.0, False)
    assert verdict.action == "pass"

    # the row changed (another input digest): the new size is recorded, not compared
    other = "sha256:" + "2" * 64
    verdict, measured = sizes.check_image(matrix, row, other, big, logs, sizes.DEFAULT_MARGIN, False)
    assert verdict.action == "record" and "the row changed" in verdict.message
    sizes.record_note(matrix, verdict, measured, write_it=True)
    assert json.loads(path.read_text())["input_digest"] == other
    assert sizes.load(path).size == docker.image_size(big)
