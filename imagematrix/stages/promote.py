"""Promote stage (CI): retag tested candidates to their final tags in the registry, no pull, no rebuild."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from imagematrix.model import datafile, labels, paths, tags
from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.model.matrix import Matrix, Row
from imagematrix.stages import attest, render
from imagematrix.stages.publish import Outcome, remote_labels
from imagematrix.tools import cosign, skopeo, soci
from imagematrix.tools import registry as registry_api


def rows_from_plan(matrix: Matrix, plan_json: str) -> list[Row]:
    """The rows of a `plan --github` matrix (JSON)."""
    fix = "pass that command's output"
    doc = datafile.parse_json(plan_json, "--plan-json", fix=fix)
    include = doc.get("include") if isinstance(doc, dict) else None
    if not isinstance(include, list) or not all(isinstance(e, dict) and isinstance(e.get("row"), str) for e in include):
        raise InputError("--plan-json is not a `plan --github` matrix: an object whose include is a list of "
                         "{row: ID, ...}", fix=fix)
    ids = [entry["row"] for entry in include]
    return matrix.select(ids) if ids else []


def missing_results(rows: list[Row], need: list[str], results: Path | None) -> dict[str, list[str]]:
    """Per row, the jobs in `need` without a result file <job>--<row-id> in `results`."""
    if need and results is None:
        raise InputError("--need needs --results DIR", fix="pass the directory of result files")
    return {row.id: [job for job in need if not (results / f"{job}--{row.id}").is_file()] for row in rows}


COMPRESSIONS = ("gzip", "zstd", "both")
ZSTD_SUFFIX = "-zstd"  # with --compression both: the zstd copy of each final tag
ZSTD_LEVEL = 3


@dataclass(frozen=True)
class Signing:
    """promote --sign-key: every digest the final tags will point at is signed, with the build's SBOM and provenance
    attested to it, before any final tag moves. The SBOM and provenance are the built digest's signed attestations in
    the registry (checked against this key's public key: `build --sign-key` made them), else build's files in
    log_dir/<row>/ (sbom.cdx.json, provenance.json) when their provenance names the built digest."""
    key: Path
    password: str = field(repr=False)  # from COSIGN_PASSWORD, never printed
    log_dir: Path | None = None


def publish_tags(repo: str, candidate: str, final: list[str], compression: str,
                 sign: Callable[[str, str | None, bool], None] | None = None) -> list[str]:
    """Point the final tags at the candidate: gzip retags it (BuildKit pushed gzip layers; nothing moves); zstd
    copies it once with every layer recompressed as zstd (skopeo) to <candidate>-zstd and points the final tags at
    that copy; both does the first and, beside each final tag, <tag>-zstd at the copy. With `sign`, it is called
    before any final tag moves with the candidate's tag, the zstd copy's tag (None for gzip) and whether final tags
    will point at the candidate itself (not with zstd alone). Returns the tags written."""
    staged = f"{candidate[:128 - len(ZSTD_SUFFIX)]}{ZSTD_SUFFIX}" if compression in ("zstd", "both") else None
    if staged:
        skopeo.copy(f"{repo}:{candidate}", f"{repo}:{staged}", compress="zstd", level=ZSTD_LEVEL)
    if sign:
        sign(candidate, staged, compression != "zstd")
    written: list[str] = []
    if compression in ("gzip", "both"):
        for tag in final:
            registry_api.retag(repo, candidate, tag)
        written += final
    if staged:
        names = final if compression == "zstd" else [f"{tag}{ZSTD_SUFFIX}" for tag in final]
        for tag in names:
            registry_api.retag(repo, staged, tag)
        written += names
    return written


def _built_records(row: Row, ref: str, pub: Path, log_dir: Path | None) -> tuple[dict, dict, bool]:
    """(SBOM, provenance, already signed) of the built digest ref (name@sha256:...); see Signing."""
    try:
        cosign.verify(ref, pub)
        sbom = cosign.verify_attestation(ref, pub, attest.SBOM_TYPE)[-1]["predicate"]
        prov = cosign.verify_attestation(ref, pub, attest.PROVENANCE_TYPE)[-1]["predicate"]
        return sbom, prov, True
    except RuntimeFailure as exc:
        why = [f"not signed and attested with this key in the registry ({exc})"]
    if log_dir is None:
        why.append("no --attestations DIR (build's --log-dir) was given")
    else:
        sbom_path, prov_path = log_dir / row.id / "sbom.cdx.json", log_dir / row.id / "provenance.json"
        if sbom_path.is_file() and prov_path.is_file():
            prov = json.loads(prov_path.read_text())
            built = attest.built_digest(prov)
            if built == ref.rsplit("@", 1)[1]:
                return json.loads(sbom_path.read_text()), prov, False
            why.append(f"{prov_path} is the provenance of {built}, another push")
        else:
            why.append(f"no {sbom_path.name} and {prov_path.name} in {log_dir / row.id}")
    raise RuntimeFailure(f"row {row.id}, stage sign: no SBOM and provenance for {ref}: {'; '.join(why)}; "
                         "build it with --sign-key, or pass its build logs with --attestations")


def _signer(repo: str, row: Row, signing: Signing, pub: Path, work: Path, done: list[str]):
    """The `sign` callback of publish_tags for one row (see Signing); `done` collects what it signed."""
    def sign(candidate: str, zstd_tag: str | None, gzip_published: bool) -> None:
        built = f"{repo}@{registry_api.digest(repo, candidate)}"
        sbom, prov, signed = _built_records(row, built, pub, signing.log_dir)
        targets = []
        if gzip_published:
            if signed:
                done.append(f"{built.rsplit('@', 1)[1][:19]} (signed by build)")
            else:
                targets.append((built, prov))
        if zstd_tag:
            copy = f"{repo}@{registry_api.digest(repo, zstd_tag)}"
            targets.append((copy, attest.recompressed(prov, source=built, compression="zstd", level=ZSTD_LEVEL,
                                                      tool=f"skopeo {skopeo.version()}", finished=attest.now())))
        for ref, predicate in targets:
            out = work / ref.rsplit(":", 1)[1][:16]
            out.mkdir(parents=True, exist_ok=True)
            sbom_path, prov_path = attest.write(out, sbom, predicate)
            attest.attach(ref, sbom_path, prov_path, signing.key, signing.password)
            done.append(ref.rsplit("@", 1)[1][:19])

    return sign


def promote(matrix: Matrix, rows: list[Row], registry: str, console: Console,
            missing: dict[str, list[str]] | None = None, compression: str = "gzip",
            signing: Signing | None = None, lazy: bool = False) -> list[Outcome]:
    """Retag each row's tested candidate to its final tags, in the registry (no pull, no rebuild); with
    compression zstd or both, the final tags (or <tag>-zstd beside them) get a zstd-recompressed copy; with
    signing, what they point at is signed and attested first (see Signing); with lazy, the gzip image gets a SOCI
    index beside it for lazy pulling (tools/soci.py; the image and its digest are unchanged).

    A row is held back when `missing` names test results it lacks, when its candidate is absent, or when the
    candidate was built from another input than the committed build context.
    """
    if lazy and compression == "zstd":
        raise InputError("--soci indexes gzip layers (SOCI 0.4 reads only gzip): with --compression zstd no final "
                         "tag is gzip", fix="pass --compression gzip or both with --soci")
    if lazy:
        soci.require()
    with tempfile.TemporaryDirectory(prefix="promote-", dir=paths.scratch_dir()) as work:
        pub = cosign.public_key(signing.key, signing.password, Path(work) / "cosign.pub") if signing else None
        outcomes = _promote(matrix, rows, registry, missing or {}, compression, signing, pub, Path(work), lazy)
    for o in outcomes:
        console.print(f"{o.row}: {'promoted' if o.status == 'pushed' else 'NOT promoted'}: {o.detail}")
    return outcomes


def _promote(matrix: Matrix, rows: list[Row], registry: str, missing: dict[str, list[str]], compression: str,
             signing: Signing | None, pub: Path | None, work: Path, lazy: bool = False) -> list[Outcome]:
    final = tags.published_tags([(r.id, r.vllm) for r in matrix.rows])
    repo = tags.repository(registry)
    outcomes = []
    for item in render.render(matrix, rows):
        row, digest, started = item.row, item.context_digest(), time.monotonic()
        candidate = tags.candidate_tag(row.id, digest)

        def outcome(state: str, detail: str, row=row, started=started) -> Outcome:
            return Outcome(row.id, state, "promote", time.monotonic() - started, detail)

        lacking = missing.get(row.id)
        if lacking:
            outcomes.append(outcome("failed", f"held back: no passing result from {', '.join(lacking)}"))
            continue
        try:
            remote = remote_labels(registry, candidate)
            if remote is None:
                outcomes.append(outcome("failed", f"no candidate {repo}:{candidate} in the registry: build and push it "
                                                  f"with `build.py build --row {row.id} --push candidate`"))
                continue
            if remote.get(labels.INPUT_DIGEST) != digest:
                outcomes.append(outcome("failed", f"{repo}:{candidate} was built from input "
                                                  f"{remote.get(labels.INPUT_DIGEST)}, not {digest}: rebuild it"))
                continue
            if len(row.platforms) > 1:
                outcomes.append(outcome(*_promote_index(matrix, row, registry, candidate, final[row.id], compression,
                                                        signing)))
                continue
            signed: list[str] = []
            sign = _signer(repo, row, signing, pub, work / row.id, signed) if signing and pub else None
            written = publish_tags(repo, candidate, final[row.id], compression, sign)
            # one index serves every tag of the gzip digest: the registry finds it by that digest
            index = soci.index(f"{repo}:{candidate}", namespace=f"imagematrix-soci-{digest[7:19]}") if lazy else None
            outcomes.append(outcome("pushed", f"{repo}:{candidate} -> {', '.join(written)}"
                                              + ("" if compression == "gzip" else f" ({compression})")
                                              + (f"; signed and attested: {', '.join(signed)}" if sign else "")
                                              + (f"; SOCI index {index[:19]} for lazy pulling" if index else "")))
        except RuntimeFailure as exc:
            outcomes.append(outcome("failed", str(exc)))
    return outcomes


def _promote_index(matrix: Matrix, row: Row, registry: str, candidate: str, final: list[str], compression: str,
                   signing: Signing | None) -> tuple[str, str]:
    """(status, detail) of a multi-platform row's promotion: its final tags become one index of its amd64 candidate
    and each other platform's (CI's build-platforms job pushed it, after its smoke tests, under its own candidate
    tag), each checked to carry its platform's input digest. gzip only, unsigned: a zstd copy of an index and the
    signing of one here are not done yet (build without --platform signs the index it pushes)."""
    repo = tags.repository(registry)
    if compression != "gzip" or signing:
        return "failed", (f"held back: a multi-arch row is promoted with gzip layers and unsigned only (asked: "
                          f"{compression}{', signed' if signing else ''}); build it whole with `build.py build --row "
                          f"{row.id}` (one index, signed with --sign-key) instead")
    images = []
    for platform in row.platforms:
        item = render.render_one(matrix, row, platform)
        tag = candidate if platform == row.platforms[0] else tags.candidate_tag(row.id, item.context_digest())
        state = registry_api.platform_state(repo, tag)
        found = (state[1].get(platform) or {}) if state else {}
        if found.get(labels.INPUT_DIGEST) != item.context_digest():
            return "failed", (f"held back: no {platform} candidate {repo}:{tag} with input {item.context_digest()} "
                              f"(build it with `build.py build --row {row.id} --platform {platform} --push candidate`)")
        images.append((platform, state[0]))
    index = registry_api.put_index(repo, final, images)
    return "pushed", f"{', '.join(f'{p} {d[:19]}' for p, d in images)} -> {', '.join(final)} (index {index[:19]})"
