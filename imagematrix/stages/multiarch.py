"""A multi-platform row's own steps (stages/pipeline.run_multi), around the steps of stages/steps.py that each of its
images walks (steps.PLATFORM_STEPS): the check of its index, the push of each image and of the index, and each
image's SBOM and provenance with the index's signature."""

from __future__ import annotations

import os

from imagematrix.model import labels
from imagematrix.stages import attest, coverage_row, sizes
from imagematrix.stages import publish as publish_stage
from imagematrix.stages.steps import Finish, merge_json
from imagematrix.tools import docker
from imagematrix.tools import registry as registry_api


def check_index(lead, jobs) -> Finish | None:
    """A multi-platform row (stages/pipeline.run_multi): skip it when its tag (the candidate tag of its amd64 image
    with push=candidate) is an index with an image of every platform carrying that platform's input digest."""
    request = lead.request
    lead.say("checking the registry")
    if request.rebuild or request.push == "none":
        return None
    tag = lead.row.id if request.push == "final" else lead.candidate_tag
    index, found = registry_api.platform_state(lead.repo, tag) or (None, {})
    if any((found.get(job.platform) or {}).get(labels.INPUT_DIGEST) != job.digest for job in jobs):
        return None
    moved = []
    for alias in (lead.final[1:] if request.push == "final" else []):
        if registry_api.digest(lead.repo, alias) != index:
            lead.say(f"tagging {lead.repo}:{alias}")
            registry_api.retag(lead.repo, tag, alias)
            moved.append(alias)
    inputs = ", ".join(f"{job.platform} {job.digest[:19]}" for job in jobs)
    return Finish("skipped", f"{lead.repo}:{tag} already has inputs {inputs}"
                  + (f"; tagged {', '.join(moved)}" if moved else ""))


def push_index(lead, jobs) -> None:
    """A multi-platform row's images, each under its own candidate tag (each keeps its digest, labels, size baseline
    and manifest.json), then one index of them under the row's tags (final, or the amd64 candidate tag)."""
    request, row = lead.request, lead.row
    targets = {"final": lead.final, "candidate": [lead.candidate_tag], "none": []}[request.push]
    images = []
    for job in jobs:
        if targets:
            job.say(f"pushing the {job.platform} image {job.candidate}")
            job.image_digest = publish_stage.push(row, job.candidate, job.candidate)
            images.append((job.platform, job.image_digest))
        verdict, measured = job.size
        job.size_note = sizes.record_note(request.matrix, verdict, measured, bool(targets) or request.record_size)
        if job.coverage is not None:
            job.coverage_note = coverage_row.record_note(request.matrix.root, job.coverage,
                                                         bool(targets) or request.record_coverage)
        publish_stage.write_manifest(job.candidate, {job.candidate_tag: job.image_digest} if job.image_digest else {},
                                     job.logs / "manifest.json")
        if job.coverage is not None:
            merge_json(job.logs / "manifest.json", coverage_row.manifest_entry(job.coverage.baseline))
    if targets:
        lead.say(f"pushing the index of {', '.join(j.platform for j in jobs)} as {', '.join(targets)}")
        index = registry_api.put_index(lead.repo, targets, images)
        lead.index = index
        lead.pushed.clear()
        lead.pushed.update({tag: index for tag in targets})
        merge_json(lead.logs / "manifest.json", {"index": {"digest": index, "tags": targets,
                                                       "images": {p: d for p, d in images}}})
        for job in jobs:
            docker.run("rmi", job.candidate)  # the local tags only; the registry holds each under its candidate tag
    notes = [f"{job.platform}: {note}" for job in jobs for note in (job.size_note, job.coverage_note) if note]
    lead.size_note, lead.coverage_note = "\n".join(notes), ""


def attest_index(lead, jobs) -> None:
    """Each platform's image gets its own SBOM and provenance (from its own lock and input digest); with a key, both
    are attested to its digest, and the index is signed (cosign verify of the tag checks the index's signature)."""
    request, row = lead.request, lead.row
    for job in jobs:
        ref_digest = f"{job.repo}@{job.image_digest}"
        job.say(f"SBOM and provenance of the {job.platform} image")
        sbom_path, prov_path = attest.for_build(
            row, ref_digest, job.logs, lock_text=job.lock_text(), input_digest=job.digest, base_ref=job.base_ref,
            flash_attn=None, started=job.started_at,
            coverage=coverage_row.byproduct(job.coverage.baseline) if job.coverage is not None else None,
            platform=job.platform)
        if request.signing.key:
            job.say(f"attesting and signing {ref_digest}")
            attest.attach(ref_digest, sbom_path, prov_path, request.signing.key, os.environ.get("COSIGN_PASSWORD", ""))
    if request.signing.key:
        index_ref = f"{lead.repo}@{lead.index}"
        lead.say(f"signing the index {index_ref}")
        attest.sign(index_ref, request.signing.key, os.environ.get("COSIGN_PASSWORD", ""))
