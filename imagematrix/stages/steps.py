"""The steps of one row's build, in order, each with one job: check -> base -> flash-attn -> build -> smoke -> size ->
coverage -> push -> attest. stages/pipeline.py walks them.

Each step reads the request and what the earlier steps left on the row's job (stages/pipeline.RowJob), does its work
through one stage module, and leaves its result there. A step ends the row early by returning a Finish (a skip, a
failed smoke test); any other failure is a RuntimeFailure or InputError naming the row and the step.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass

from imagematrix.knowledge.flash_attn import wheel_spec
from imagematrix.model import labels
from imagematrix.model.errors import RuntimeFailure
from imagematrix.stages import attest, builder, coverage_row, flash_attn, sizes, smoke
from imagematrix.stages import publish as publish_stage
from imagematrix.tools import cuobjdump, docker, host
from imagematrix.tools import registry as registry_api


@dataclass(frozen=True)
class Finish:
    """A row's end before its last step: its status (skipped, failed) and what to tell."""

    status: str
    detail: str


def check(job) -> Finish | None:
    """Skip the row when the registry already has its input digest (unless rebuild); a missing alias is tagged."""
    request, row = job.request, job.row
    job.say("checking the registry")
    # rebuild (CI's schedule): base images and the daemon change without changing the input digest
    if request.rebuild or request.push == "none":
        return None
    if request.push == "candidate":
        return Finish("skipped", f"{job.candidate} is already pushed") if _current(job, job.candidate_tag) else None
    if not _current(job, row.id):
        return None
    moved = []
    for alias in job.final[1:]:  # an alias whose earlier push failed, or that moved to this row
        found = job.known[alias] if alias in job.known else publish_stage.remote_labels(request.registry, alias)
        if (found or {}).get(labels.INPUT_DIGEST) != job.digest:
            job.say(f"tagging {job.repo}:{alias}")
            registry_api.retag(job.repo, row.id, alias)
            moved.append(alias)
    return Finish("skipped", f"{job.repo}:{row.id} already has input {job.digest[:19]}"
                  + (f"; tagged {', '.join(moved)}" if moved else ""))


def _current(job, tag: str) -> bool:
    """Whether the tag carries the row's input digest: as read beforehand, else (or when not) as read now; read now,
    the row's other tags are read now too (what was read beforehand is older than what changed them)."""
    if tag in job.known and (job.known[tag] or {}).get(labels.INPUT_DIGEST) == job.digest:
        return True
    job.known.clear()
    found = publish_stage.remote_labels(job.request.registry, tag)
    return bool(found) and found.get(labels.INPUT_DIGEST) == job.digest


def base(job) -> None:
    """The row's base image, where the build starts FROM."""
    job.say("base image" if job.native_platform else f"base image ({job.platform})")
    docker.cli()  # no docker CLI fails this step, before any work
    if job.native_platform and not cuobjdump.find():  # nor does a missing cuobjdump wait for the coverage step, after the build
        raise RuntimeFailure(f"row {job.row.id}, stage base: cuobjdump is not installed, and the coverage step reads "
                             f"the image's device code with it before the push: {cuobjdump.INSTALL_HINT}")
    job.base_ref = builder.ensure_base(job.row, job.request.buildkit, job.say, job.request.registry, job.platform)
    job.build_args.update(builder.base_build_args(job.row, job.request.registry))


def flash_attn_wheel(job) -> None:
    """The row's flash-attn wheel image: the one named (--flash-attn-wheel), else the first source that has it."""
    request, row, sources = job.request, job.row, job.request.flash_attn
    job.say("the flash-attn wheel")
    if sources.wheel:
        job.wheel = flash_attn.given(row, wheel_spec(row), sources.wheel)
        job.say(f"flash-attn: using {job.wheel.origin}, as --flash-attn-wheel says")
    else:
        job.wheel = flash_attn.ensure(
            row, context=job.context_dir, registry=request.registry, mirror=sources.mirror,
            indexes=list(sources.indexes), secrets_files=job.secrets(), log_dir=job.logs, log=job.say,
            allow_compile=sources.compile, push=request.push != "none", build_args=dict(job.build_args))
    job.build_args["FLASH_ATTN_WHEELS"] = job.wheel.ref
    job.labels.update(job.wheel.build_labels())


def build(job) -> None:
    """The row's image under its candidate tag, with BuildKit."""
    request, row = job.request, job.row
    emulated = job.platform != host.native_platform()
    if emulated:  # before BuildKit, whose RUN steps would fail with "exec format error" or crash under an old qemu
        problem = host.emulation_missing(job.platform)
        if problem:
            raise RuntimeFailure(f"row {row.id}, stage build: {problem}")
    job.say("building (BuildKit)" if job.native_platform else
            f"building for {job.platform} (BuildKit{', emulated by qemu-user' if emulated else ''})")
    suffix = "" if job.native_platform else "-" + job.platform.replace("/", "-")
    cache = f"{job.repo}:buildcache-{row.id}{suffix}" if request.cache_registry else None
    builder.build(job.item, job.candidate, job.context_dir.parent, job.secrets(), job.logs / "build.log",
                  job.say, cache=cache, build_args=job.build_args, extra_labels=job.labels)


def smoke_tests(job) -> Finish | None:
    """The smoke tests inside the candidate, once per built image."""
    job.say("smoke tests" if job.platform == host.native_platform() else f"smoke tests of the {job.platform} image, "
            "under emulation (qemu-user)")
    log = job.logs / "smoke.log"
    passed, earlier = smoke.run_once(job.request.matrix, job.row, job.candidate, log, job.platform)
    if not passed:
        return Finish("failed", f"smoke tests failed, nothing pushed; log {log}; "
                                f"the untested image stays here as {job.candidate}")
    if earlier:
        job.say(f"smoke tests passed earlier on this image ({earlier[:19]}): not run again")
    return None


def size(job) -> None:
    """The image's size against the row's baseline: fails the row, unpushed, when it grew too much."""
    request = job.request
    job.say("size against the baseline")
    job.size = sizes.check_image(request.matrix, job.row, job.digest, job.candidate, job.logs, request.size_margin,
                                 request.record_size, name=job.item.name)
    job.say(f"size: {job.size[0].message}")


def coverage(job) -> None:
    """The GPU verdict read from the candidate's binaries (stages/coverage_row, cuobjdump on its layers) against the
    row's baseline coverage/<row-id>.json and the GPUs the row declares (gpus, gpus_jit): a library that lost a kernel,
    or a declared GPU that a required library has no kernel for, fails the row, unpushed, naming the library and the
    architecture. The scan goes to build-logs/<row>/coverage.json; the baseline is written after the push."""
    request, row = job.request, job.row
    job.say("GPU coverage of its binaries")
    outcome = coverage_row.check_image(row, job.candidate, request.matrix.root, daemon=True,
                                       record=request.record_coverage, write_baseline=False)
    (job.logs / "coverage.json").write_text(coverage_row.to_json(outcome.baseline))
    if outcome.check.action == "fail":
        raise RuntimeFailure(f"row {row.id}, stage coverage: {outcome.check.message}\n"
                             f"  (a build records it with `python build.py build --row {row.id} --rebuild "
                             f"--record-coverage`)\nthe image stays here as {job.candidate}")
    missing = coverage_row.declared(row, outcome.baseline)
    if missing:
        raise RuntimeFailure(f"row {row.id}, stage coverage: {coverage_row.declared_failure(row, missing)}\n"
                             f"the image stays here as {job.candidate}")
    job.coverage = outcome
    job.say(f"coverage: {outcome.check.message.splitlines()[0]}")


def push(job) -> None:
    """The tested image under its tags (final, candidate or none, as the request says), its size and GPU coverage
    recorded and its manifest written (with the coverage verdict)."""
    request, row = job.request, job.row
    targets = {"final": job.final, "candidate": [job.candidate_tag], "none": []}[request.push]
    for tag in targets:  # the row's own tag first: a rerun repairs an alias whose push failed
        job.say(f"pushing {job.repo}:{tag}")
        job.pushed[tag] = publish_stage.push(row, job.candidate, f"{job.repo}:{tag}")
    verdict, measured = job.size
    job.size_note = sizes.record_note(request.matrix, verdict, measured, bool(job.pushed) or request.record_size)
    if job.coverage is not None:
        job.coverage_note = coverage_row.record_note(request.matrix.root, job.coverage,
                                                     bool(job.pushed) or request.record_coverage)
    job.say("writing the manifest")
    image = f"{job.repo}:{row.id}" if request.push == "final" else job.candidate
    manifest = job.logs / "manifest.json"
    publish_stage.write_manifest(image, job.pushed, manifest)
    if job.coverage is not None:
        merge_json(manifest, coverage_row.manifest_entry(job.coverage.baseline))
    if request.push == "final":
        docker.run("rmi", job.candidate)  # the candidate tag only; layers stay with the final tags


def merge_json(path, entry: dict) -> None:
    """entry's keys into the JSON object in path (written fresh when there is none)."""
    doc = json.loads(path.read_text()) if path.is_file() else {}
    doc.update(entry)
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def attest_pushed(job) -> None:
    """SBOM and provenance (with the GPU verdict of the coverage step) of the pushed digest into build-logs/<row>/;
    attested and signed with a key."""
    request, row, wheel = job.request, job.row, job.wheel
    ref_digest = f"{job.repo}@{next(iter(job.pushed.values()))}"
    job.say("SBOM and provenance")
    sbom_path, prov_path = attest.for_build(
        row, ref_digest, job.logs, lock_text=job.lock_text(), input_digest=job.digest, base_ref=job.base_ref,
        flash_attn={"file": wheel.filename, "sha256": wheel.sha256, "origin": wheel.origin} if wheel else None,
        started=job.started_at,
        coverage=coverage_row.byproduct(job.coverage.baseline) if job.coverage is not None else None,
        platform=job.platform)
    if request.signing.key:
        job.say(f"attesting and signing {ref_digest}")
        attest.attach(ref_digest, sbom_path, prov_path, request.signing.key, os.environ.get("COSIGN_PASSWORD", ""))


@dataclass(frozen=True)
class Step:
    name: str  # as the progress and a failure name it
    run: Callable[..., Finish | None]
    when: Callable[..., bool] = lambda job: True


STEPS = (
    Step("check", check),
    Step("base", base),
    Step("flash-attn", flash_attn_wheel, when=lambda job: bool(job.row.flash_attn) and job.native_platform),
    Step("build", build),
    Step("smoke", smoke_tests),
    Step("size", size),
    Step("coverage", coverage, when=lambda job: job.native_platform),  # coverage/<row>.json is the amd64 image's
    Step("push", push),
    Step("attest", attest_pushed, when=lambda job: bool(job.pushed)),
)

# A multi-platform row's steps for each of its images, before push_index and attest_index (stages/pipeline.run_multi).
# flash-attn has no aarch64 wheel (validate refuses such a row); the GPU coverage read from the binaries is the amd64
# image's: its baseline, coverage/<row>.json, is one per row.
PLATFORM_STEPS = (
    Step("base", base),
    Step("flash-attn", flash_attn_wheel, when=lambda job: bool(job.row.flash_attn) and job.native_platform),
    Step("build", build),
    Step("smoke", smoke_tests),
    Step("size", size),
    Step("coverage", coverage, when=lambda job: job.native_platform),
)
