"""Build stage: base images, build inputs as BuildKit secrets, the bake file, and the BuildKit build itself."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

from imagematrix.model import labels, secrets, tags
from imagematrix.model.errors import RuntimeFailure
from imagematrix.model.fields import BASE_REPOSITORY, DEFAULT_PLATFORM, bootstrap_suites
from imagematrix.model.matrix import Row
from imagematrix.model.paths import cache_dir
from imagematrix.stages import render
from imagematrix.tools import debootstrap, docker, host
from imagematrix.tools import registry as registry_api

# A BuildKit plain-progress step line: "#12 [torch 1/1] RUN --mount=... uv pip install ..."
STEP_RE = re.compile(r"^#\d+ \[([^\]]+)\] (\S.*)")
# What BuildKit does after the last step, which takes minutes for a large image: "#23 exporting layers",
# "#23 exporting to image", "#24 exporting cache to registry", "#23 sending tarball", "#23 naming to ...".
EXPORT_RE = re.compile(r"^#\d+ ((?:exporting|writing image|naming to|sending tarball|importing to docker|unpacking)\b.*)")


@dataclass(frozen=True)
class BuildInputs:
    """Build inputs that must never persist in an image (a CA, indexes, an apt mirror, proxies): handed to BuildKit
    as secrets only. Where the flash-attn wheel comes from is stages/flash_attn.Sources; the signing key,
    stages/attest.Signing."""

    ca_cert: Path | None = None
    pip_index_url: str | None = None
    extra_index_url: str | None = None
    apt_mirror: str | None = None
    http_proxy: str | None = None
    https_proxy: str | None = None
    no_proxy: str | None = None

    def env_lines(self) -> str:
        names = {"pip_index_url": "PIP_INDEX_URL", "extra_index_url": "PIP_EXTRA_INDEX_URL",
                 "apt_mirror": "APT_MIRROR", "http_proxy": "HTTP_PROXY", "https_proxy": "HTTPS_PROXY",
                 "no_proxy": "NO_PROXY"}
        return "".join(f"{names[f.name]}={shlex.quote(getattr(self, f.name))}\n"
                       for f in fields(self) if f.name in names and getattr(self, f.name))

    def write_secrets(self, directory: Path) -> dict[str, Path]:
        """Write the two secret files (mode 0600) into directory; returns id -> path."""
        directory.mkdir(parents=True, exist_ok=True)
        ca = directory / "ca-cert"
        env = directory / "build-env"
        for path, content in ((ca, self.ca_cert.read_bytes() if self.ca_cert else b""), (env, self.env_lines().encode())):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(content)
        return {"ca-cert": ca, "build-env": env}


def base_build_args(row: Row, registry: str | None) -> dict[str, str]:
    """The build argument a published base needs: BASE_REGISTRY, where REGISTRY/imagematrix-base@<digest> is."""
    return {"BASE_REGISTRY": registry.rstrip("/")} if row.base_digest and registry else {}


def can_bootstrap() -> str | None:
    """None when this machine can run debootstrap, else why not (a hosted CI runner: no debootstrap, not root)."""
    if not debootstrap.available():
        return "debootstrap is not installed"
    if os.geteuid() != 0:
        return f"debootstrap needs root and this process runs as uid {os.geteuid()}"
    return None


def _publish_fix(row: Row, registry: str) -> str:
    return (f"on a machine with root and debootstrap (`python build.py setup`), publish the base once: "
            f"`python build.py base --suite {row.bootstrap_suite} --registry {registry} --record`, then "
            "`python build.py render` and commit knowledge/bases.yaml and dockerfiles/generated (every row on that "
            "suite is then built FROM the registry by digest, which hosted CI runners can do)")


def ensure_base(row: Row, inputs: BuildInputs, log, registry: str | None = None,
                platform: str = DEFAULT_PLATFORM) -> str:
    """Make the row's base available to the build; returns the reference the build starts FROM.

    A published debootstrap base (digest in knowledge/bases.yaml) must be in registry as imagematrix-base@<digest>:
    nothing is bootstrapped or pulled here (BuildKit pulls it, with the docker and the docker-container driver).
    An unpublished one is bootstrapped (root and debootstrap needed) and imported locally (docker driver only);
    any other base is pulled. platform: another platform's debootstrap base is bootstrapped for its architecture
    (under emulation) as its own local image (Row.platform_base_image); a published digest is linux/amd64's."""
    if platform != DEFAULT_PLATFORM:
        return _foreign_base(row, inputs, log, platform)
    if row.base_digest:
        if registry is None:
            raise RuntimeFailure(f"row {row.id}, stage base: {row.base} is published by digest {row.base_digest}; "
                                 "the build needs the registry that holds it (--registry)")
        ref = row.base_ref(registry)
        repository = f"{registry.rstrip('/')}/{BASE_REPOSITORY}"
        if registry_api.digest(repository, row.base_digest) is None:
            raise RuntimeFailure(
                f"row {row.id}, stage base: the registry has no {ref} ({row.base}, published with the digest "
                f"recorded in knowledge/bases.yaml)\n"
                f"  fix: copy it there from a registry that has it (`skopeo copy docker://OTHER/{BASE_REPOSITORY}@"
                f"{row.base_digest} docker://{repository}:{row.bootstrap_suite}`; the digest stays the same), or "
                + _publish_fix(row, registry) + " - a new bootstrap gets a new digest")
        log(f"base {ref} (from the registry, by digest)")
        return ref
    image = row.base_image
    if docker.image_exists(image):
        return image
    if row.bootstrap_suite:
        suite = bootstrap_suites()[row.bootstrap_suite]
        mirror = inputs.apt_mirror or suite["mirror"]
        why_not = can_bootstrap()
        if why_not:
            raise RuntimeFailure(
                f"row {row.id}, stage base: {row.base} has no published base image (no digest for suite "
                f"{row.bootstrap_suite} in knowledge/bases.yaml) and this machine cannot bootstrap it: {why_not}\n"
                f"  fix: {_publish_fix(row, registry or tags.DEFAULT_REGISTRY)}; or run the build as root on a machine "
                "with debootstrap (`python build.py setup` installs it)")
        log(f"bootstrapping {image} from {secrets.redact_url(mirror)} (debootstrap, about a minute)")
        bootstrap_image(row.bootstrap_suite, image, mirror, inputs.http_proxy, f"row {row.id}, stage base")
        return image
    log(f"pulling {image}")
    proc = docker.pull(image)
    if proc.returncode != 0:
        raise RuntimeFailure(
            f"row {row.id}, stage base: cannot pull {image}: {proc.stderr.strip()[-600:]}\n"
            "  fix: make the registry reachable, or bootstrap a base from a distribution mirror with "
            "`base: debootstrap:bookworm` (see knowledge/bases.yaml)")
    return image


def _foreign_base(row: Row, inputs: BuildInputs, log, platform: str) -> str:
    """The base of the row's context for a platform other than linux/amd64 (see ensure_base)."""
    image = row.platform_base_image(platform)
    if not row.bootstrap_suite:
        return image  # a registry base: BuildKit pulls the platform's manifest of its index
    if docker.image_exists(image):
        return image
    problem = host.emulation_missing(platform)
    if problem:
        raise RuntimeFailure(f"row {row.id}, stage base ({platform}): {problem}")
    why_not = can_bootstrap()
    if why_not:
        raise RuntimeFailure(f"row {row.id}, stage base ({platform}): {row.base} for {platform} is bootstrapped on the "
                             f"building machine, and this one cannot: {why_not}\n"
                             "  fix: run the build as root on a machine with debootstrap (`python build.py setup`)")
    suite = bootstrap_suites()[row.bootstrap_suite]
    mirror = inputs.apt_mirror or (suite.get("mirror_arm64") if platform == "linux/arm64" else None) or suite["mirror"]
    log(f"bootstrapping {image} for {platform} from {secrets.redact_url(mirror)} (debootstrap under emulation, "
        "minutes)")
    bootstrap_image(row.bootstrap_suite, image, mirror, inputs.http_proxy, f"row {row.id}, stage base ({platform})",
                    platform=platform)
    return image


def bootstrap_image(suite_name: str, image: str, mirror: str, http_proxy: str | None, where: str,
                    platform: str = DEFAULT_PLATFORM) -> None:
    """debootstrap suite_name into a temporary root filesystem and `docker import` it as image (for platform: its
    architecture, emulated when it is not this host's)."""
    suite = bootstrap_suites()[suite_name]
    cache_dir().mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="imagematrix-rootfs-", dir=cache_dir()))
    foreign = platform != DEFAULT_PLATFORM
    try:
        proc = debootstrap.bootstrap(suite_name, work / "rootfs", mirror, http_proxy,
                                     distro=suite["distro"], components=suite.get("components"),
                                     arch=platform.rsplit("/", 1)[-1] if foreign else None)
        if proc.returncode != 0:
            raise RuntimeFailure(f"{where}: debootstrap {suite_name} from {secrets.redact_url(mirror)} failed:\n"
                                 + secrets.redact_text(f"{proc.stdout[-1500:]}{proc.stderr[-1500:]}"))
        failed = docker.import_rootfs(work / "rootfs", image, platform if foreign else None)
        if failed:
            raise RuntimeFailure(f"{where}: docker import failed: {failed}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _step_text(text: str) -> str:
    """A RUN step without its mounts and the buildenv preamble: what it does, shortened."""
    text = re.sub(r"--mount=\S+\s*", "", text).replace("set -eu; . /run/imagematrix-in/buildenv.sh; ", "")
    return text if len(text) <= 80 else text[:77] + "..."


def stage_cache_refs(item: render.Rendered, cache: str) -> dict[str, str]:
    """The shared caches of the row's os and torch stages, beside its own cache ref (REPO:buildcache-<row>):
    {"os": REPO:buildcache-os-<key>, "torch": REPO:buildcache-torch-<key>}, keys from render.stage_keys()."""
    repository = cache.rsplit(":", 1)[0]
    return {name: f"{repository}:buildcache-{name}-{key}" for name, key in item.stage_keys().items()}


def bake_definition(items: list[tuple[render.Rendered, str]], context_root: Path, secrets: dict[str, Path],
                    caches: dict[str, str] | None = None, build_args: dict[str, str] | None = None,
                    extra_labels: dict[str, str] | None = None, shared_stages: bool = False) -> dict:
    """A `docker buildx bake` file (JSON) building each rendered row under its candidate tag.

    caches: row id -> registry reference of its BuildKit cache (CI: `type=registry`, mode=max, so the os and
    torch stages come back on a fresh runner; needs a builder with the docker-container driver).
    shared_stages (with caches): the row also imports the shared caches of its os and torch stages
    (stage_cache_refs), which sibling rows with the same stages export, and exports them itself from two
    cache-only targets (<row>__os, <row>__torch: the same solve, so nothing is built twice); the row's own target
    then outputs to the daemon explicitly (`--load` would load the stage targets too).
    """
    targets = {}
    for item, candidate in items:
        cache = (caches or {}).get(item.row.id)
        common = {
            "context": str(context_root / item.name),
            "dockerfile": "Dockerfile",
            # another platform's context builds for it (emulated on an amd64 host); amd64's bake stays as it was
            **({"platforms": [item.platform]} if item.platform != DEFAULT_PLATFORM else {}),
            **({"args": build_args} if build_args else {}),
            "secret": [f"id={sid},src={path}" for sid, path in sorted(secrets.items())],
        }
        stages = stage_cache_refs(item, cache) if cache and shared_stages else {}
        imports = [cache, *(stages[name] for name in ("torch", "os") if name in stages)] if cache else []
        targets[_target(item.name)] = {
            **({"cache-from": [f"type=registry,ref={ref}" for ref in imports],
                "cache-to": [f"type=registry,ref={cache},mode=max"]} if cache else {}),
            **common,
            "tags": [candidate],
            "labels": {labels.INPUT_DIGEST: item.context_digest(), **(extra_labels or {})},
            **({"output": ["type=docker"]} if stages else {}),
        }
        for name in stages:  # os imports its own cache; torch imports torch's and os's
            own = [stages["torch"], stages["os"]] if name == "torch" else [stages["os"]]
            targets[f"{_target(item.name)}__{name}"] = {
                **common,
                "target": name,
                "cache-from": [f"type=registry,ref={ref}" for ref in own],
                "cache-to": [f"type=registry,ref={stages[name]},mode=max"],
                "output": ["type=cacheonly"],
            }
    return {"group": {"default": {"targets": sorted(targets)}}, "target": targets}


def _target(name: str) -> str:
    return name.replace(".", "_").replace("@", "__")


def build(item: render.Rendered, candidate: str, context_root: Path, secrets: dict[str, Path], log_path: Path,
          progress: Callable[[str], None] | None = None, cache: str | None = None,
          build_args: dict[str, str] | None = None, extra_labels: dict[str, str] | None = None) -> None:
    """Build one row with BuildKit: buildx bake when the CLI has buildx, else DOCKER_BUILDKIT=1 docker build."""
    cli = docker.cli()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if cache and not docker.has_buildx(cli):
        raise RuntimeFailure(f"row {item.row.id}, stage build: a registry build cache needs docker buildx "
                             "(run `python build.py setup`)")
    if docker.has_buildx(cli):
        bake = log_path.parent / "bake.json"
        definition = bake_definition([(item, candidate)], context_root, secrets,
                                     {item.row.id: cache} if cache else None, build_args, extra_labels,
                                     shared_stages=True)
        bake.write_text(json.dumps(definition, indent=2))
        names = sorted(definition["target"])  # the row's target, and its stage-cache targets with a cache
        cmd = [cli, "buildx", "bake", "--progress=plain", "-f", str(bake), *([] if cache else ["--load"]), *names]
        env = {**os.environ}
    else:
        cmd = [cli, "build", "--progress=plain", "-t", candidate, "--label",
               f"{labels.INPUT_DIGEST}={item.context_digest()}",
               *(["--platform", item.platform] if item.platform != DEFAULT_PLATFORM else [])]
        cmd += [a for sid, path in sorted(secrets.items()) for a in ("--secret", f"id={sid},src={path}")]
        cmd += [a for k, v in sorted((build_args or {}).items()) for a in ("--build-arg", f"{k}={v}")]
        cmd += [a for k, v in sorted((extra_labels or {}).items()) for a in ("--label", f"{k}={v}")]
        cmd.append(str(context_root / item.name))
        env = {**os.environ, "DOCKER_BUILDKIT": "1"}

    def on_line(line: str) -> None:
        if progress:
            step, export = STEP_RE.match(line), EXPORT_RE.match(line)
            if step:
                progress(f"[{step.group(1)}] {_step_text(step.group(2))}")
            elif export:
                progress(_step_text(export.group(1)))

    if docker.run_logged(cmd[1:], log_path, env=env, on_line=on_line) != 0:
        tail = log_path.read_text().splitlines()[-25:]
        raise RuntimeFailure(f"row {item.row.id}, stage build: BuildKit build failed (full log: {log_path}):\n"
                             + "\n".join("    " + line for line in tail))
