"""`build.py base`: a debootstrap base published to a registry as imagematrix-base:<suite>, and its digest recorded
in knowledge/bases.yaml, so that every row on that suite is built FROM the registry by digest (stages/builder.py
bootstraps an unpublished one on the building machine)."""

from __future__ import annotations

import re
from pathlib import Path

from imagematrix.model import paths, secrets
from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.model.fields import BASE_REPOSITORY, BOOTSTRAP_IMAGE, MANIFEST_DIGEST_RE, bootstrap_suites
from imagematrix.stages.builder import BuildInputs, bootstrap_image, can_bootstrap
from imagematrix.tools import docker
from imagematrix.tools import registry as registry_api


def publish_base(suite: str, registry: str, inputs: BuildInputs, log, image: str | None = None) -> str:
    """Push a debootstrap base as REGISTRY/imagematrix-base:<suite>; returns its manifest digest.

    image: a local image to publish as that suite's base (default: bootstrap the suite now, root and debootstrap
    needed)."""
    where = f"base {suite}"
    if suite not in bootstrap_suites():
        raise InputError(f"unknown debootstrap suite {suite!r}", where=str(paths.BASES),
                         fix=f"use one of: {', '.join(sorted(bootstrap_suites()))}")
    if image is None:
        why_not = can_bootstrap()
        if why_not:
            raise RuntimeFailure(f"{where}: cannot bootstrap here: {why_not}\n  fix: run `python build.py base` as "
                                 "root on a machine with debootstrap (`python build.py setup` installs it)")
        image = BOOTSTRAP_IMAGE.format(suite=suite)
        mirror = inputs.apt_mirror or bootstrap_suites()[suite]["mirror"]
        log(f"bootstrapping {image} from {secrets.redact_url(mirror)} (debootstrap, about a minute)")
        bootstrap_image(suite, image, mirror, inputs.http_proxy, where)
    repository = f"{registry.rstrip('/')}/{BASE_REPOSITORY}"
    target = f"{repository}:{suite}"
    log(f"pushing {image} as {target}")
    for args in (("tag", image, target), ("push", target)):
        proc = docker.run(*args)
        if proc.returncode != 0:
            raise RuntimeFailure(f"{where}: docker {args[0]} {target} failed: {proc.stderr.strip()[-600:]}")
    digest = registry_api.digest(repository, suite)
    if not digest:
        raise RuntimeFailure(f"{where}: {target} is not in the registry after the push")
    return digest


def record_base_digest(suite: str, digest: str, path: Path | None = None) -> bool:
    """Write `digest: <digest>` under the suite in knowledge/bases.yaml (comments and layout kept); True when the
    file changed."""
    if not MANIFEST_DIGEST_RE.fullmatch(digest):
        raise InputError(f"{digest!r} is not a manifest digest", fix="sha256: and 64 hex digits")
    path = path or paths.BASES
    lines = path.read_text().splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if re.match(rf"^  {re.escape(suite)}:\s*(#.*)?$", line)), None)
    if start is None:
        raise InputError(f"no suite {suite!r} under debootstrap:", where=str(path), fix="add the suite first")
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith("    ") and lines[i].strip()),
               len(lines))
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    new = f"    digest: {digest}  # REGISTRY/{BASE_REPOSITORY}:{suite}, published by `build.py base --record`\n"
    existing = next((i for i in range(start + 1, end) if re.match(r"^    digest:", lines[i])), None)
    if existing is not None:
        if lines[existing] == new:
            return False
        lines[existing] = new
    else:
        lines.insert(end, new)
    paths.write_atomic(path, "".join(lines))
    bootstrap_suites.cache_clear()
    return True
