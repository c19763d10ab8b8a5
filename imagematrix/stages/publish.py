"""Publish stage: push a tested image's tags, read a tag's labels from the registry, write the row's manifest
(pip freeze, dpkg list, labels, digest, size). The build's push step (stages/steps.py) decides when."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from imagematrix.model import secrets, tags
from imagematrix.model.errors import RuntimeFailure
from imagematrix.model.matrix import Row
from imagematrix.tools import docker
from imagematrix.tools import registry as registry_api


@dataclass
class Outcome:
    row: str
    status: str  # pushed | tested | skipped | failed
    stage: str  # the step the row stopped at (check for a skip, the failing one); '' when it ran every step
    seconds: float
    detail: str = ""


def remote_labels(registry: str, tag: str) -> dict | None:
    """Labels of tags.repository:tag in the registry (credentials from the docker config), None when the tag is absent."""
    return registry_api.labels(tags.repository(registry), tag)


def remote_signed(registry: str, tag: str) -> bool | None:
    """Whether tags.repository:tag has a cosign signature in the registry (cosign's tag `sha256-<hex>.sig` beside the
    image's manifest digest); None when the tag is absent."""
    repository = tags.repository(registry)
    digest = registry_api.digest(repository, tag)
    if digest is None:
        return None
    return registry_api.digest(repository, f"sha256-{digest.removeprefix('sha256:')}.sig") is not None


def remote_platform_labels(registry: str, tag: str) -> dict[str, dict] | None:
    """{platform: labels of its image} of the tag (an index: each of its images; a single image: its own)."""
    return registry_api.platform_labels(tags.repository(registry), tag)


def remote_platforms(registry: str, tag: str) -> set[str]:
    """The platforms the tag serves; empty when the tag is absent."""
    return set(remote_platform_labels(registry, tag) or {})


def remote_labels_of(registry: str, tag_list: list[str]) -> dict[str, dict | None]:
    """remote_labels of each tag, read together: each tag's manifest once, each distinct image once, in parallel."""
    return registry_api.labels_of_tags(tags.repository(registry), tag_list)


def write_manifest(image: str, pushed: dict[str, str], path: Path) -> None:
    """pip freeze, dpkg list, labels, digest and size of the image, as JSON."""
    inspect = json.loads(docker.run("image", "inspect", image).stdout)[0]

    def inside(command: str) -> list[str]:
        proc = docker.run("run", "--rm", "--entrypoint", "sh", image, "-c", command)
        return proc.stdout.splitlines()

    manifest = {
        "image": image,
        "pushed": pushed,
        "image_id": inspect["Id"],
        "size_bytes": inspect["Size"],
        "labels": inspect["Config"]["Labels"],
        "pip_freeze": inside("uv pip freeze --python /opt/venv/bin/python"),
        "dpkg": inside("dpkg-query -W -f '${Package} ${Version}\\n'"),
    }
    # the image's own environment (a row's env: values) and whatever the image reports may carry credentials
    # (HF_TOKEN=..., an index URL with userinfo in a `pkg @ URL` line): the manifest is a build log, redacted
    manifest = secrets.redact_json(manifest)
    manifest["env"] = secrets.redact_assignments(inspect["Config"]["Env"] or [])
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


PUSH_MODES = ("final", "candidate", "none")


def push(row: Row, image: str, ref: str) -> str:
    """The one route by which a built image reaches the registry: tag image as ref (unless it is ref already), then
    docker push ref; returns the manifest digest the registry reported."""
    if ref != image:
        proc = docker.run("tag", image, ref)
        if proc.returncode != 0:
            raise RuntimeFailure(f"row {row.id}, stage push: docker tag {ref} failed: {proc.stderr.strip()}")
    proc = docker.run("push", ref)
    if proc.returncode != 0:
        raise RuntimeFailure(f"row {row.id}, stage push: docker push {ref} failed: {proc.stderr.strip()[-600:]}")
    found = re.search(r"digest: (sha256:[0-9a-f]{64})", proc.stdout)
    return found.group(1) if found else ""
