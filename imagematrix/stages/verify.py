"""Verify stage: a published image is what this project built: signed, with an SBOM and a provenance statement
whose lock digest is the committed lock's (`build.py verify REF --key cosign.pub`)."""

from __future__ import annotations

from imagematrix.model import lockfile
from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.model.matrix import Matrix
from imagematrix.stages import attest, locks
from imagematrix.tools import cosign


def verify(matrix: Matrix, ref: str, pub) -> list[str]:
    """What checked out, one line each; RuntimeFailure naming the first check that did not."""
    done = []
    cosign.verify(ref, pub)
    done.append(f"signature: {ref} is signed by {pub}")
    sboms = cosign.verify_attestation(ref, pub, attest.SBOM_TYPE)
    components = (sboms[-1].get("predicate") or {}).get("components") or []
    if not components:
        raise RuntimeFailure(f"SBOM of {ref}: the signed CycloneDX attestation lists no components")
    done.append(f"SBOM: signed CycloneDX attestation, {len(components)} components")
    provs = cosign.verify_attestation(ref, pub, attest.PROVENANCE_TYPE)
    predicate = provs[-1].get("predicate") or {}
    row_id = ((predicate.get("buildDefinition") or {}).get("externalParameters") or {}).get("row")
    if not row_id:
        raise RuntimeFailure(f"provenance of {ref}: the signed statement names no row")
    try:
        row = matrix.select([row_id])[0]
    except InputError:
        raise RuntimeFailure(f"provenance of {ref}: row {row_id} is not in {matrix.path}: this checkout cannot "
                             "vouch for its lock") from None
    committed = lockfile.file_sha256(locks.read_lock(matrix, row))
    deps = predicate["buildDefinition"].get("resolvedDependencies") or []
    recorded = next((d.get("digest", {}).get("sha256") for d in deps if d.get("uri") == f"locks/{row.id}.txt"), None)
    if recorded != committed:
        raise RuntimeFailure(f"provenance of {ref}: lock digest {recorded} differs from the committed "
                             f"locks/{row.id}.txt ({committed}): the image was not built from this lock")
    smoke = next((b.get("annotations", {}) for b in predicate.get("runDetails", {}).get("byproducts", [])
                  if b.get("name") == "smoke tests"), {})
    done.append(f"provenance: row {row.id}, lock sha256 {committed[:16]}... matches the committed lock; "
                f"smoke tests: {smoke.get('summary', 'not recorded')}")
    again = (predicate["buildDefinition"].get("internalParameters") or {}).get(attest.RECOMPRESSION)
    if again:
        done.append(f"recompression: a copy of {again.get('from')} with {again.get('layers')} layers "
                    f"({again.get('tool')}); the build's records above are that digest's")
    return done
