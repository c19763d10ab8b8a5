"""The multi-arch path of `build` on something small (issue 29): a slim image built for linux/amd64 and linux/arm64
(emulated by qemu-user on an amd64 host), each checked inside its own container, pushed under its own
candidate tag, one index under the row's tag, which `docker buildx imagetools inspect` shows with both platforms;
with cosign (`setup` installs it) each image's SBOM and provenance are attested and signed and the index signed,
and `verify` checks the tag platform by platform; a second run is a no-op. The real rows' contexts install gigabytes (vLLM, torch): their arm64 builds take far longer
under emulation than CI's budget (docs/measurements.md); this proves the same code path in about five minutes, most
of it the arm64 base's debootstrap under emulation (once per machine: the image stays).

Real daemon, registry and BuildKit: stages/pipeline.run_multi with the rows' steps, their contexts replaced by a
slim Dockerfile on the row's base, and the CPU suite (which checks a row's pins) by the architecture check.
"""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from imagematrix.model import matrix as matrix_mod
from imagematrix.model import tags
from imagematrix.stages import attest, coverage_row, generated, pipeline, smoke, verify
from imagematrix.stages.render import Rendered
from imagematrix.tools import cosign, cuobjdump, docker, host
from tests.conftest import ROOT

ROW = "verl0.9.1-vllm0.24.0-torch2.11.0-cu130-py311"  # a row that names linux/arm64 (its base, its id)
SLIM = ("FROM {base} AS os\nFROM os AS torch\nFROM torch AS image\n"
        "RUN uname -m > /machine\nLABEL io.imagematrix.row=\"{row}\"\n")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ready():
    if not docker.daemon_running():
        pytest.skip("needs a running Docker daemon: run `python build.py setup`")
    if not host.registry_up():
        pytest.skip(f"needs the embedded registry on {host.REGISTRY}: run `python build.py setup`")
    problem = host.emulation_missing("linux/arm64")
    if problem:
        pytest.skip(f"needs linux/arm64 emulation: {problem.splitlines()[0]} (`python build.py setup`)")


class Quiet:
    def __init__(self):
        self.steps = []

    def note(self, message): pass
    def row_started(self, row_id, index, total): pass
    def say(self, row_id, message): pass
    def row_done(self, outcome): pass

    def step(self, row_id, name):
        self.steps.append(name)


def test_a_slim_row_is_built_smoked_and_pushed_as_one_index_for_both_platforms(ready, tmp_path, monkeypatch):
    real = matrix_mod.load(ROOT / "matrix.yaml").select([ROW])[0]
    assert real.platforms == ("linux/amd64", "linux/arm64")
    (tmp_path / "matrix.yaml").write_text((ROOT / "matrix.yaml").read_text())
    for lock in (f"{ROW}.txt", f"linux-arm64/{ROW}.txt"):  # each image's SBOM and provenance come from its own lock
        (tmp_path / "locks" / lock).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "locks" / lock).write_text((ROOT / "locks" / lock).read_text())
    m = matrix_mod.load(tmp_path / "matrix.yaml")
    row = m.select([ROW])[0]
    items = []
    for platform in row.platforms:
        marker = uuid.uuid4().hex  # a fresh context each run: the images are new, the second run must skip
        files = {"Dockerfile": SLIM.format(base=row.platform_base_image(platform), row=row.id).encode(),
                 "marker.txt": marker.encode()}
        item = Rendered(row=row, files=files, platform=platform)
        context = generated.generated_dir(m) / item.name
        context.mkdir(parents=True)
        for name, content in files.items():
            (context / name).write_bytes(content)
        items.append(item)

    def arch_check(matrix, row_, image, log, platform):
        """The smoke step: the image's config and a container of it say its platform (emulated for arm64)."""
        machine = subprocess.run([docker.cli(), "run", "--rm", "--platform", platform, "--entrypoint", "cat", image,
                                  "/machine"], capture_output=True, text=True).stdout.strip()
        log.write_text(smoke.platform_note(platform) + f"uname -m: {machine}\n1 passed\n")
        return machine == {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}[platform], None

    monkeypatch.setattr(smoke, "run_once", arch_check)
    monkeypatch.setattr(cuobjdump, "find", lambda: "cuobjdump")  # the slim image has no device code to read
    passed = coverage_row.Outcome(coverage_row.Check("pass", "coverage not read (slim image)"), None, None)
    monkeypatch.setattr(coverage_row, "check_image", lambda *a, **k: passed)
    monkeypatch.setattr(coverage_row, "record_note", lambda *a, **k: "")
    monkeypatch.setattr(coverage_row, "manifest_entry", lambda baseline: {})
    monkeypatch.setattr(coverage_row, "byproduct", lambda baseline: None)
    monkeypatch.setattr(coverage_row, "to_json", lambda baseline: "{}\n")
    monkeypatch.setattr(coverage_row, "declared", lambda row_, baseline: [])
    namespace = f"{host.REGISTRY}/imagematrix-test-multiarch-{uuid.uuid4().hex[:8]}"  # .ci/run removes imagematrix-test-*
    signing = None
    if cosign.find():  # each image attested and signed, the index signed: verify checks them platform by platform
        monkeypatch.setenv("COSIGN_PASSWORD", "multiarch")
        key, pub = cosign.generate_key_pair(tmp_path / "keys", "multiarch")
        signing = attest.Signing(key)
    request = pipeline.BuildRequest(matrix=m, registry=namespace, log_dir=tmp_path / "logs",
                                    signing=signing or attest.Signing())
    progress = Quiet()
    try:
        outcome = pipeline.run_multi(request, items, [row.id], progress)
        assert outcome.status == "pushed", outcome.detail
        assert progress.steps == ["check", "base", "build", "smoke", "size", "coverage", "base (linux/arm64)",
                                  "build (linux/arm64)", "smoke (linux/arm64)", "size (linux/arm64)", "push", "attest"]
        ref = f"{namespace}/verl:{row.id}"
        shown = subprocess.run([docker.cli(), "buildx", "imagetools", "inspect", "--raw", ref], capture_output=True,
                               text=True)
        assert shown.returncode == 0, shown.stderr
        platforms = {f"{m_['platform']['os']}/{m_['platform']['architecture']}" for m_ in json.loads(shown.stdout)["manifests"]}
        assert platforms == {"linux/amd64", "linux/arm64"}
        logs = tmp_path / "logs" / row.id
        assert "under emulation" in (logs / "linux-arm64" / "smoke.log").read_text()
        for folder in (logs, logs / "linux-arm64"):  # each image: its manifest, SBOM and provenance
            assert {"manifest.json", "sbom.cdx.json", "provenance.json", "size.json"} <= {p.name for p in folder.iterdir()}
        index = json.loads((logs / "manifest.json").read_text())["index"]
        assert set(index["images"]) == {"linux/amd64", "linux/arm64"}
        assert (tmp_path / "sizes" / f"{row.id}@linux-arm64.json").is_file()  # arm64's own size baseline
        if signing:
            checked = verify.verify(m, ref, pub)
            assert "the index" in checked[0] and any(line.startswith("linux/arm64: provenance") for line in checked)
        again = pipeline.run_multi(request, items, [row.id], Quiet())
        assert again.status == "skipped" and "linux/arm64" in again.detail
    finally:
        for item in items:
            candidate = f"{namespace}/verl:{tags.candidate_tag(row.id, item.context_digest())}"
            subprocess.run([docker.cli(), "rmi", "-f", candidate], capture_output=True)
