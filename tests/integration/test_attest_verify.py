"""Signed SBOM and provenance on a pushed image, and `build.py verify`, against the embedded registry with the real
cosign (installed by `build.py setup`). The image is a small stand-in carrying a real row's labels (a 7 GB build
adds nothing to what is checked here); its manifest is the stand-in's, its lock the row's committed lock."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from imagematrix.model import labels, tags
from imagematrix.model import matrix as matrix_mod
from imagematrix.model.paths import ROOT
from imagematrix.stages import attest, locks, render
from imagematrix.tools import cosign, docker
from imagematrix.tools import registry as registry_api
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
    sbom_path, prov_path = _records(tmp_path, ref_digest, lock_text)
    attest.attach(ref_digest, sbom_path, prov_path, keys[0], PASSWORD)


def _records(tmp_path, ref_digest: str, lock_text: str | None = None):
    """sbom.cdx.json and provenance.json in tmp_path, as build writes them into build-logs/<row>/."""
    m = matrix_mod.load(ROOT / "matrix.yaml")
    row = m.select([ROW])[0]
    lock = locks.read_lock(m, row)
    manifest = {"image": ref_digest, "labels": {}, "pip_freeze": ["verl==0.3.0.post1", "torch==2.5.1"],
                "dpkg": ["libc6 2.36-9+deb12u10", "python3.11 3.11.2-6+deb12u6"]}
    predicate = attest.provenance(row, image=ref_digest, digest=ref_digest.split("@")[1], lock_text=lock_text or lock,
                                  input_digest="sha256:" + "1" * 64, base=row.base_image, base_id="sha256:" + "2" * 64,
                                  smoke={"summary": "13 passed"}, tools={"docker": "test"}, started=attest.now(),
                                  finished=attest.now())
    tmp_path.mkdir(parents=True, exist_ok=True)
    return attest.write(tmp_path, attest.sbom(row, manifest, lock, "debian"), predicate)


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


# zstd copies made by `promote --compression zstd|both --sign-key`: signed, with the build's SBOM and provenance


def _candidate(registry_ns: str, nonce: str) -> str:
    """A stand-in candidate of ROW (the input digest promote checks); its digest reference."""
    repo = tags.repository(registry_ns)
    m = matrix_mod.load(ROOT / "matrix.yaml")
    digest = render.render(m, m.select([ROW]))[0].context_digest()
    ref = f"{repo}:{tags.candidate_tag(ROW, digest)}"
    push_tiny_image(docker.cli(), ref, {labels.INPUT_DIGEST: digest, "io.imagematrix.row": ROW, "bench.nonce": nonce})
    return f"{repo}@{registry_api.digest(repo, tags.candidate_tag(ROW, digest))}"


def _layer_media(ref: str) -> set[str]:
    repo, tag = ref.rsplit(":", 1)
    host, name = registry_api.split(repo)
    manifest = registry_api.Client(host).get_json(f"/v2/{name}/manifests/{tag}", registry_api.MANIFEST_MEDIA)
    return {layer["mediaType"] for layer in manifest["layers"]}


@pytest.fixture
def signing(keys, monkeypatch):
    if not shutil.which("skopeo"):
        pytest.skip("needs skopeo: run `python build.py setup`")
    monkeypatch.setenv("COSIGN_PASSWORD", PASSWORD)
    return keys


def test_promote_signs_the_zstd_copy_with_the_builds_attestations(run, tmp_path, signing, registry_ns):
    built = _candidate(registry_ns, "zstd-signed")
    _attest(tmp_path / "built", built, signing)  # what `build --push candidate --sign-key` does
    result = run("promote", "--row", ROW, "--registry", registry_ns, "--compression", "both",
                 "--sign-key", signing[0])
    assert result.code == 0, result
    assert "(signed by build)" in result.out and PASSWORD not in result.out + result.err
    repo = tags.repository(registry_ns)
    assert _layer_media(f"{repo}:{ROW}-zstd") == {"application/vnd.oci.image.layer.v1.tar+zstd"}
    result = run("verify", f"{repo}:{ROW}-zstd", "--key", signing[1])
    assert result.code == 0, result.err
    assert "SBOM: signed CycloneDX attestation, 4 components" in result.out
    assert "matches the committed lock; smoke tests: 13 passed" in result.out
    assert f"recompression: a copy of {built} with zstd level 3 layers (skopeo 1." in " ".join(result.out.split())
    assert run("verify", f"{repo}:{ROW}", "--key", signing[1]).code == 0  # the gzip tag: build's signature
    # the zstd tag moved to an image nobody signed: refused; the signed copy itself still verifies
    zstd_digest = registry_api.digest(repo, f"{ROW}-zstd")
    push_tiny_image(docker.cli(), f"{repo}:{ROW}-zstd", {"io.imagematrix.row": ROW, "bench.nonce": "tampered"})
    result = run("verify", f"{repo}:{ROW}-zstd", "--key", signing[1])
    assert result.code == 1 and "NOT VERIFIED" in result.err and "signature of" in result.err
    assert run("verify", f"{repo}@{zstd_digest}", "--key", signing[1]).code == 0


def test_a_zstd_copy_promoted_without_a_key_is_refused(run, tmp_path, signing, registry_ns):
    _attest(tmp_path / "built", _candidate(registry_ns, "zstd-unsigned"), signing)
    assert run("promote", "--row", ROW, "--registry", registry_ns, "--compression", "zstd").code == 0
    result = run("verify", f"{tags.repository(registry_ns)}:{ROW}", "--key", signing[1])
    assert result.code == 1 and "NOT VERIFIED" in result.err and "signature of" in result.err


def test_a_zstd_copy_of_an_image_built_from_another_lock_is_refused(run, tmp_path, signing, registry_ns):
    _attest(tmp_path / "built", _candidate(registry_ns, "zstd-other-lock"), signing, lock_text="a different lock\n")
    result = run("promote", "--row", ROW, "--registry", registry_ns, "--compression", "zstd", "--sign-key", signing[0])
    assert result.code == 0, result
    result = run("verify", f"{tags.repository(registry_ns)}:{ROW}", "--key", signing[1])
    assert result.code == 1 and "differs from the committed" in result.err and f"locks/{ROW}.txt" in result.err


def test_promote_signs_from_build_logs_and_moves_nothing_without_records(run, tmp_path, signing, registry_ns):
    """CI's build job does not sign: promote takes the SBOM and provenance from its build logs (--attestations),
    and only when that provenance names the candidate's digest; otherwise no final tag moves."""
    repo = tags.repository(registry_ns)
    built = _candidate(registry_ns, "from-logs")
    _records(tmp_path / "stale" / ROW, f"{repo}@sha256:{'3' * 64}")  # the logs of another push
    result = run("promote", "--row", ROW, "--registry", registry_ns, "--compression", "both",
                 "--sign-key", signing[0], "--attestations", tmp_path / "stale")
    assert result.code == 1 and "another push" in result.out, result
    assert registry_api.digest(repo, ROW) is None and registry_api.digest(repo, f"{ROW}-zstd") is None
    _records(tmp_path / "logs" / ROW, built)
    result = run("promote", "--row", ROW, "--registry", registry_ns, "--compression", "both",
                 "--sign-key", signing[0], "--attestations", tmp_path / "logs")
    assert result.code == 0, result
    for tag in (ROW, f"{ROW}-zstd"):
        result = run("verify", f"{repo}:{tag}", "--key", signing[1])
        assert result.code == 0, (tag, result.err)
    assert "recompression" in result.out
