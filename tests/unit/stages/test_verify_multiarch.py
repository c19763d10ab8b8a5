"""`build.py verify` of a multi-arch tag (issue 29): the index's signature, then each platform's image against that
platform's committed lock (its provenance names locks/linux-arm64/<row>.txt). cosign and the registry are stand-ins."""

from __future__ import annotations

import pytest

from imagematrix.model import lockfile
from imagematrix.model import matrix as matrix_mod
from imagematrix.model.errors import RuntimeFailure
from imagematrix.stages import attest, locks, verify

ROW_ID = "verl0.9.1-vllm0.24.0-torch2.11.0-cu130-py311"


def provenance(m, row, platform: str, lock_text: str | None = None) -> dict:
    text = lock_text if lock_text is not None else locks.read_lock(m, row, platform)
    return attest.provenance(row, image="r/verl:x", digest="sha256:" + "a" * 64, lock_text=text,
                             input_digest="sha256:b", base="base", base_id="sha256:c", smoke={"summary": "1 passed"},
                             tools={}, started="s", finished="f", platform=platform)


@pytest.fixture
def fake(monkeypatch):
    m = matrix_mod.load()
    row = m.select([ROW_ID])[0]
    signed, statements = [], {}
    digests = {"linux/amd64": "sha256:" + "1" * 64, "linux/arm64": "sha256:" + "2" * 64}
    monkeypatch.setattr(verify.registry_api, "index_images", lambda ref: ("r/verl", dict(digests)))
    monkeypatch.setattr(verify.cosign, "verify", lambda ref, pub: signed.append(ref))

    def attestations(ref, pub, kind):
        platform = next(p for p, d in digests.items() if ref.endswith(d))
        if kind == attest.SBOM_TYPE:
            return [{"predicate": {"components": [{"name": "torch"}]}}]
        return [{"predicate": statements.get(platform) or provenance(m, row, platform)}]

    monkeypatch.setattr(verify.cosign, "verify_attestation", attestations)
    return m, row, signed, statements


def test_a_multi_arch_tag_is_verified_image_by_image_against_each_platform_s_lock(fake):
    m, row, signed, _ = fake
    lines = verify.verify(m, f"r/verl:{ROW_ID}", "cosign.pub")
    assert signed == [f"r/verl:{ROW_ID}", "r/verl@sha256:" + "1" * 64, "r/verl@sha256:" + "2" * 64]
    assert "the index" in lines[0] and "linux/amd64, linux/arm64" in lines[0]
    arm = [line for line in lines if line.startswith("linux/arm64: provenance")]
    assert arm and lockfile.file_sha256(locks.read_lock(m, row, "linux/arm64"))[:16] in arm[0]


def test_an_arm64_image_built_from_another_lock_is_refused(fake):
    m, row, _, statements = fake
    statements["linux/arm64"] = provenance(m, row, "linux/arm64", lock_text=locks.read_lock(m, row))  # amd64's lock
    with pytest.raises(RuntimeFailure, match=r"locks/linux-arm64/.*the image was not built from this lock"):
        verify.verify(m, f"r/verl:{ROW_ID}", "cosign.pub")
