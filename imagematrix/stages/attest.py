"""Attest stage: what a user can verify about a pushed image.

- SBOM (CycloneDX 1.6, built with cyclonedx-python-lib): every Python distribution installed in the image's venv
  (`uv pip freeze` inside it, from the row's manifest) with the sha256 the lock pins for it, the flash-attn wheel
  with the digest the build recorded, and every Debian/Ubuntu package (`dpkg-query` inside it).
- Provenance (in-toto statement, SLSA provenance v1 predicate): the row, the lock's digest, the build context's
  digest (the image's input digest), the base image, the flash-attn wheel, the builder and tool versions, the
  smoke-test result that gated the push, and the GPU verdict read from the image's binaries before it (byproduct
  `gpu coverage`: per capability native / ptx-jit / none, the minimum driver).

Both are written to build-logs/<row>/ (sbom.cdx.json, provenance.json). With a signing key, cosign attaches each to
the pushed digest as a signed attestation and signs the digest itself; `build.py verify` checks all three.
A zstd copy made by `promote` gets the same SBOM and the build's provenance with one addition (`recompressed`): the
gzip digest it was recompressed from, the tool and the level; its own digest is signed like the built one.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from imagematrix.model import labels, lockfile
from imagematrix.model.errors import RuntimeFailure
from imagematrix.model.fields import DEFAULT_PLATFORM, bootstrap_suites, platform_slug
from imagematrix.model.matrix import Row
from imagematrix.tools import cosign, docker

BUILD_TYPE = "https://imagematrix.dev/build/v1"  # names this project's build recipe (row -> lock -> Dockerfile)
PROVENANCE_TYPE = "slsaprovenance1"  # cosign's name for https://slsa.dev/provenance/v1
SBOM_TYPE = "cyclonedx"
RECOMPRESSION = "recompression"  # internalParameters key of a recompressed copy's provenance
_FREEZE_RE = re.compile(r"^([A-Za-z0-9_.-]+)==(\S+)$")


def sbom(row: Row, manifest: dict, lock_text: str, distro: str) -> dict:
    """The image's SBOM as a CycloneDX 1.6 JSON document (validated against the schema)."""
    # Imported here, not at module level: the validator pulls in jsonschema's format checkers (rfc3987_syntax
    # builds its grammar on import, ~1 s), which every command importing this module would pay (issue 30).
    from cyclonedx.model import HashAlgorithm, HashType
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator
    from packageurl import PackageURL

    hashes = {}
    for name, entry in lockfile.parse(lock_text).items():
        found = re.findall(r"--hash=sha256:([0-9a-f]{64})", entry.text)
        hashes[canonicalize_name(name)] = found
    image = manifest.get("image", row.id)
    bom = Bom()
    bom.metadata.component = Component(type=ComponentType.CONTAINER, name=image.rsplit(":", 1)[0], version=row.id,
                                       bom_ref=f"image:{row.id}")
    found_labels = manifest.get("labels") or {}
    for line in manifest.get("pip_freeze") or []:
        match = _FREEZE_RE.match(line.strip())
        if not match:
            continue
        name, version = match.groups()
        key = canonicalize_name(name)
        digests = hashes.get(key, [])
        if key == "flash-attn" and found_labels.get(labels.FLASH_ATTN_SHA256):
            digests = [found_labels[labels.FLASH_ATTN_SHA256]]
        bom.components.add(Component(
            type=ComponentType.LIBRARY, name=name, version=version, bom_ref=f"pypi:{key}@{version}",
            purl=PackageURL("pypi", name=key, version=version),
            # the lock pins every file uv may install (one per platform): list them all; one of them is installed
            hashes=[HashType(alg=HashAlgorithm.SHA_256, content=d) for d in digests]))
    for line in manifest.get("dpkg") or []:
        parts = line.split()
        if len(parts) != 2:
            continue
        name, version = parts
        bom.components.add(Component(
            type=ComponentType.LIBRARY, name=name, version=version, bom_ref=f"deb:{name}@{version}",
            purl=PackageURL("deb", namespace=distro, name=name, version=version, qualifiers={"arch": "amd64"})))
    bom.register_dependency(bom.metadata.component, list(bom.components))  # the image contains each of them
    text = JsonV1Dot6(bom).output_as_string(indent=2)
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if error:
        raise RuntimeFailure(f"row {row.id}, stage attest: the SBOM does not validate against CycloneDX 1.6: {error}")
    return json.loads(text)


def provenance(row: Row, *, image: str, digest: str, lock_text: str, input_digest: str, base: str,
               base_id: str, smoke: dict, tools: dict[str, str], started: str, finished: str,
               flash_attn: dict | None = None, coverage: dict | None = None,
               platform: str = DEFAULT_PLATFORM) -> dict:
    """The SLSA provenance v1 predicate of one pushed image (cosign wraps it in the in-toto statement); coverage: the
    GPU verdict read from its binaries before the push (stages/coverage_row.byproduct), a byproduct beside the
    smoke tests. platform: a multi-platform row's image names its own lock and context (linux/arm64's)."""
    native = platform == DEFAULT_PLATFORM  # as stages/locks.lock_path and render.context_name place them
    lock_uri = f"locks/{row.id}.txt" if native else f"locks/{platform_slug(platform)}/{row.id}.txt"
    context = row.id if native else f"{row.id}@{platform_slug(platform)}"
    dependencies = [
        {"uri": lock_uri, "digest": {"sha256": lockfile.file_sha256(lock_text)}},
        {"uri": f"dockerfiles/generated/{context}/", "digest": {"sha256": input_digest.removeprefix("sha256:")}},
        {"uri": base, "digest": {"sha256": base_id.removeprefix("sha256:")}},
    ]
    if flash_attn:
        dependencies.append({"uri": flash_attn["file"] or f"flash-attn {row.flash_attn}",
                             "digest": {"sha256": flash_attn["sha256"]},
                             "annotations": {"origin": flash_attn["origin"]}})
    return {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {"row": row.id, "pins": row.pins(), "python": row.python, "cuda": row.cuda,
                                   **({"platform": platform} if platform != DEFAULT_PLATFORM else {})},
            "internalParameters": {"image": image},
            "resolvedDependencies": dependencies,
        },
        "runDetails": {
            "builder": {"id": "https://imagematrix.dev/build.py", "version": tools},
            "metadata": {"invocationId": f"{row.id}@{digest}", "startedOn": started, "finishedOn": finished},
            "byproducts": [{"name": "smoke tests", "annotations": smoke}, *([coverage] if coverage else [])],
        },
    }


def built_digest(predicate: dict) -> str | None:
    """The digest the build pushed, as its provenance names it (invocationId `<row>@sha256:...`)."""
    invocation = ((predicate.get("runDetails") or {}).get("metadata") or {}).get("invocationId") or ""
    return invocation.rsplit("@", 1)[1] if "@" in invocation else None


def recompressed(predicate: dict, *, source: str, compression: str, level: int | None, tool: str,
                 finished: str) -> dict:
    """The provenance of a copy of the built image whose layers were recompressed (`promote --compression zstd`).

    Everything the build recorded stays as it was (row, lock digest, inputs, smoke tests: the files in the layers
    are the build's, only their compression differs); added: internalParameters.recompression, saying which digest
    (`source`, name@sha256:...) was recompressed, how and by what, and that digest as a resolved dependency."""
    out = copy.deepcopy(predicate)
    definition = out.setdefault("buildDefinition", {})
    definition.setdefault("internalParameters", {})[RECOMPRESSION] = {
        "from": source, "layers": compression if level is None else f"{compression} level {level}",
        "tool": tool, "finishedOn": finished}
    definition.setdefault("resolvedDependencies", []).append({
        "uri": source, "digest": {"sha256": source.rsplit("@sha256:", 1)[1]},
        "annotations": {"relation": f"recompressed from: same layer contents, layers recompressed as {compression}"}})
    return out


def smoke_summary(log: Path) -> dict:
    """The smoke tests' verdict line (pytest's last summary) and the log's digest."""
    text = log.read_text(errors="replace") if log.is_file() else ""
    summary = next((line.strip("= ") for line in reversed(text.splitlines())
                    if re.search(r"\d+ (passed|failed)", line)), "no summary")
    return {"summary": summary, "log_sha256": hashlib.sha256(text.encode()).hexdigest()}


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def write(row_logs: Path, sbom_doc: dict, predicate: dict) -> tuple[Path, Path]:
    sbom_path, prov_path = row_logs / "sbom.cdx.json", row_logs / "provenance.json"
    sbom_path.write_text(json.dumps(sbom_doc, indent=2, sort_keys=True) + "\n")
    prov_path.write_text(json.dumps(predicate, indent=2, sort_keys=True) + "\n")
    return sbom_path, prov_path


def sign(ref_digest: str, key: Path, password: str) -> None:
    """Sign a digest alone (a multi-arch index: its images carry the attestations)."""
    cosign.sign(ref_digest, key, password)


def attach(ref_digest: str, sbom_path: Path, prov_path: Path, key: Path, password: str) -> None:
    """Attest both to the digest and sign it (cosign)."""
    cosign.attest(ref_digest, sbom_path, SBOM_TYPE, key, password)
    cosign.attest(ref_digest, prov_path, PROVENANCE_TYPE, key, password)
    cosign.sign(ref_digest, key, password)


@dataclass(frozen=True)
class Signing:
    """A cosign private key: each pushed digest gets its SBOM and provenance attested and is signed; the key's
    password comes from COSIGN_PASSWORD when signing. Read on the host only, never by a build step."""

    key: Path | None = None


def for_build(row: Row, ref_digest: str, row_logs: Path, *, lock_text: str, input_digest: str, base_ref: str | None,
              flash_attn: dict | None, started: str, coverage: dict | None = None,
              platform: str = DEFAULT_PLATFORM) -> tuple[Path, Path]:
    """The SBOM and provenance of a pushed digest (REPO@sha256:...) of a row's build, written into row_logs beside
    its manifest.json and smoke.log; returns their paths."""
    if not ref_digest.split("@", 1)[1]:
        raise RuntimeFailure(f"row {row.id}, stage attest: the registry reported no digest for the push")
    manifest = json.loads((row_logs / "manifest.json").read_text())
    distro = bootstrap_suites()[row.bootstrap_suite]["distro"] if row.bootstrap_suite else "debian"
    base_ref = base_ref or row.base_image
    # a published base is pulled by BuildKit, by digest: its digest is its identity (no local image to inspect)
    base_id = (row.base_digest if row.base_digest else
               docker.run("image", "inspect", "--format", "{{.Id}}", base_ref).stdout.strip())
    tools = {"imagematrix": _version(), "docker": docker.run("version", "--format", "{{.Server.Version}}").stdout.strip()}
    predicate = provenance(
        row, image=manifest["image"], digest=ref_digest.split("@", 1)[1], lock_text=lock_text,
        input_digest=input_digest, base=base_ref, base_id=base_id, smoke=smoke_summary(row_logs / "smoke.log"),
        tools=tools, started=started, finished=now(), flash_attn=flash_attn, coverage=coverage, platform=platform)
    return write(row_logs, sbom(row, manifest, lock_text, distro), predicate)


def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("imagematrix")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
