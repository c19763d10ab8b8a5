"""Signed SBOM and provenance on a pushed image, and `build.py verify`, against the embedded registry with the real
cosign (installed by `build.py setup`). The image is a small stand-in carrying a real row's labels (a 7 GB build
adds nothing to what is checked here); its manifest is the stand-in's, its lock the row's committed lock."""

from __future__ import annotations

import json
import re

import pytest

from imagematrix.model import matrix as matrix_mod
from imagematrix.model.paths import ROOT
from imagematrix.stages import attest, locks
from imagematrix.tools import cosign, docker
from tests.conftest import push_tiny_image

ROW = "verl0.3.0.post1-vllm0.7.2-torch2.5.1-cu124-py311"
PASSWORD = "correct horse battery staple"


@pytest.fixture
def keys(tmp_path):
    if not cosign.find():
        pytest.skip("needs cosign: run `python build.py setup`")
    return cosign.generate_key_pair(tmp_path / "keys", PASSWORD)


def _pushed(ref: str, label: str) -> str:
    """Push a stand-in image at ref; its digest reference."""
    push_tiny_image(docker.cli(), ref, {"io.imagematrix.row": ROW, "bench.nonce": label})
    digest = docker.run("buildx", "imagetools", "inspect", ref, "--format", "{{json .Manifest}}").stdout
    return f"{ref.rsplit(':', 1)[0]}@{json.loads(digest)['digest']}"


def _attest(tmp_path, ref_digest: str, keys, lock_text: str | None = None) -> None:
    m = matrix_mod.load(ROOT / "matrix.yaml")
    row = m.select([ROW])[0]
    lock = locks.read_lock(m, row)
    manifest = {"image": ref_digest, "labels": {}, "pip_freeze": ["verl==0.3.0.post1", "torch==2.5.1"],
                "dpkg": ["libc6 2.36-9+deb12u10", "python3.11 3.11.2-6+deb12u6"]}
    predicate = attest.provenance(row, image=ref_digest, digest=ref_digest.split("@")[1], lock_text=lock_text or lock,
                                  input_digest="sha256:" + "1" * 64, base=row.base_image, base_id="sha256:" + "2" * 64,
                                  smoke={"summary": "13 passed"}, tools={"docker": "test"}, started=attest.now(),
                                  finished=attest.now())
    sbom_path, prov_path = attest.write(tmp_path, attest.sbom(row, manifest, lock, "debian"), predicate)
    attest.attach(ref_digest, sbom_path, prov_path, keys[0], PASSWORD)


def test_sbom_is_valid_cyclonedx_with_the_locks_hashes():
    m = matrix_mod.load(ROOT / "matrix.yaml")
    row = m.select([ROW])[0]
    lock = locks.read_lock(m, row)
    doc = attest.sbom(row, {"image": "x:1", "pip_freeze": ["torch==2.5.1", "not a line"],
                            "dpkg": ["libc6 2.36-9+deb12u10"]}, lock, "debian")
    by_name = {c["name"]: c for c in doc["components"]}
    assert doc["specVersion"] == "1.6" and set(by_name) == {"torch", "libc6"}
    assert by_name["torch"]["purl"] == "pkg:pypi/torch@2.5.1"
    torch_hashes = set(re.findall(r"--hash=sha256:([0-9a-f]{64})", lock.split("\ntorch==")[1].split("\n\n")[0]))
    assert {h["content"] for h in by_name["torch"]["hashes"]} <= torch_hashes and by_name["torch"]["hashes"]
    assert by_name["libc6"]["purl"] == "pkg:deb/debian/libc6@2.36-9%2Bdeb12u10?arch=amd64"


def test_verify_passes_on_a_signed_image_and_refuses_tampering(run, tmp_path, keys, registry_ns):
    ref = f"{registry_ns}/verl:{ROW}"
    ref_digest = _pushed(ref, "one")
    _attest(tmp_path, ref_digest, keys)
    result = run("verify", ref, "--key", str(keys[1]))
    assert result.code == 0, result.err
    assert "ok  signature" in result.out and "SBOM: signed CycloneDX attestation, 4 components" in result.out
    assert "matches the committed lock; smoke tests: 13 passed" in result.out
    # the SBOM comes back from the registry, signed
    sbom = run("sbom", "--image", ref, "--key", str(keys[1]))
    assert sbom.code == 0 and '"pkg:pypi/verl@0.3.0.post1"' in sbom.out
    # another key: refused
    other = cosign.generate_key_pair(tmp_path / "other", "x")
    result = run("verify", ref, "--key", str(other[1]))
    assert result.code == 1 and "NOT VERIFIED" in result.err and "signature of" in result.err
    # the tag moved to an image nobody signed: refused
    _pushed(ref, "tampered")
    result = run("verify", ref, "--key", str(keys[1]))
    assert result.code == 1 and "NOT VERIFIED" in result.err and "signature of" in result.err
    # the signed digest itself still verifies
    assert run("verify", ref_digest, "--key", str(keys[1])).code == 0


def test_verify_refuses_a_provenance_whose_lock_differs(run, tmp_path, keys, registry_ns):
    ref = f"{registry_ns}/verl:{ROW}"
    ref_digest = _pushed(ref, "other-lock")
    _attest(tmp_path, ref_digest, keys, lock_text="a different lock\n")
    result = run("verify", ref_digest, "--key", str(keys[1]))
    assert result.code == 1 and "differs from the committed" in result.err and f"locks/{ROW}.txt" in result.err


def test_missing_signature_is_refused(run, keys, registry_ns):
    ref = f"{registry_ns}/verl:{ROW}"
    _pushed(ref, "unsigned")
    result = run("verify", ref, "--key", str(keys[1]))
    assert result.code == 1 and "NOT VERIFIED" in result.err
