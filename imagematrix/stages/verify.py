"""Verify stage: a published image is what this project built: signed, with an SBOM and a provenance statement
whose lock digest is the committed lock's, and whose GPU verdict (read from its binaries before the push) is not
worse than the committed coverage/<row-id>.json that `pick` answers from (`build.py verify REF --key cosign.pub`)."""

from __future__ import annotations

from imagematrix.model import lockfile
from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.model.fields import DEFAULT_PLATFORM
from imagematrix.model.matrix import Matrix
from imagematrix.stages import attest, coverage_row, locks
from imagematrix.tools import cosign
from imagematrix.tools import registry as registry_api


def verify(matrix: Matrix, ref: str, pub) -> list[str]:
    """What checked out, one line each; RuntimeFailure naming the first check that did not. A multi-arch tag (a
    multi-platform row's index): the index's signature, then each platform's image as below, against that
    platform's committed lock."""
    repository, images = registry_api.index_images(ref)
    if images:
        cosign.verify(ref, pub)
        done = [f"signature: the index {ref} ({', '.join(images)}) is signed by {pub}"]
        for platform, digest in images.items():
            done += [f"{platform}: {line}" for line in _image(matrix, f"{repository}@{digest}", pub)]
        return done
    return _image(matrix, ref, pub)


def _image(matrix: Matrix, ref: str, pub) -> list[str]:
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
    platform = predicate["buildDefinition"]["externalParameters"].get("platform") or DEFAULT_PLATFORM
    if platform not in row.platforms:
        raise RuntimeFailure(f"provenance of {ref}: built for {platform}, which row {row.id} does not name")
    lock_path = locks.lock_path(matrix, row, platform)
    uri = str(lock_path.relative_to(matrix.root))
    committed = lockfile.file_sha256(locks.read_lock(matrix, row, platform))
    deps = predicate["buildDefinition"].get("resolvedDependencies") or []
    recorded = next((d.get("digest", {}).get("sha256") for d in deps if d.get("uri") == uri), None)
    if recorded != committed:
        raise RuntimeFailure(f"provenance of {ref}: lock digest {recorded} differs from the committed "
                             f"{uri} ({committed}): the image was not built from this lock")
    smoke = next((b.get("annotations", {}) for b in predicate.get("runDetails", {}).get("byproducts", [])
                  if b.get("name") == "smoke tests"), {})
    done.append(f"provenance: row {row.id}, lock sha256 {committed[:16]}... matches the committed lock; "
                f"smoke tests: {smoke.get('summary', 'not recorded')}")
    done.append(gpu_coverage(matrix, ref, row, predicate))
    again = (predicate["buildDefinition"].get("internalParameters") or {}).get(attest.RECOMPRESSION)
    if again:
        done.append(f"recompression: a copy of {again.get('from')} with {again.get('layers')} layers "
                    f"({again.get('tool')}); the build's records above are that digest's")
    return done


def gpu_coverage(matrix: Matrix, ref: str, row, predicate: dict) -> str:
    """The GPU verdict the signed provenance carries, against the committed baseline: a GPU the image covers worse
    than coverage/<row-id>.json says is a RuntimeFailure (pick would send a user of that GPU to an image without its
    kernels); better, or no baseline, is said."""
    found = next((b for b in predicate.get("runDetails", {}).get("byproducts", [])
                  if b.get("name") == coverage_row.COVERAGE_BYPRODUCT), None)
    if not found:
        return "GPU coverage: not in the provenance (an image built before the coverage step)"
    signed = found.get("annotations") or {}
    verdicts = signed.get("coverage") or {}
    by = {}
    for cap, verdict in verdicts.items():
        by.setdefault(coverage_row.SHORT.get(verdict, verdict), []).append(f"sm_{cap.replace('.', '')}")
    summary = "; ".join(f"{kind} {' '.join(caps)}" for kind, caps in by.items())
    committed = coverage_row.load(coverage_row.baseline_path(matrix.root, row.id))
    worse, better = coverage_row.compare(signed, committed)
    if worse:
        raise RuntimeFailure(f"GPU coverage of {ref}: the signed provenance's verdict is worse than the committed "
                             f"coverage/{row.id}.json, which `pick` answers from: {'; '.join(worse)}")
    where = ("no committed coverage/" + row.id + ".json (pick falls back to torch's architectures)" if committed is None
             else f"as coverage/{row.id}.json says" if not better
             else f"better than coverage/{row.id}.json ({'; '.join(better)}): re-record it")
    return f"GPU coverage (signed, read from its binaries): {summary}; driver >= {signed.get('driver_minimum')}; {where}"
