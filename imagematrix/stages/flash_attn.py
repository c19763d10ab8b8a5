"""The flash-attn wheel of a row: found in a source, tried in order, or compiled once and kept in the registry.

Sources, in order, each printed with its reason:
  (a) a release-layout mirror (--flash-attn-mirror; default GitHub's releases): v<version>/<upstream wheel name>
  (b) PEP 503 indexes (--flash-attn-index, repeatable): a wheel whose local version names the row's CUDA, torch
      and C++ ABI (WheelSpec.fits)
  (c) the registry: <registry>/flash-attn-wheels:<key>, a wheel compiled earlier for the same key
  (d) compiling PyPI's sdist: the row Dockerfile's flash-attn-compile stage (target flash-attn-wheel-out); the
      wheel's device code is read here (cuobjdump) before it is kept: machine code for every architecture asked

The wheel travels into the row's build as an image that holds only the wheel (FROM scratch), named by the build
arg FLASH_ATTN_WHEELS; its sha256 and origin become labels of that image and of the row's image. With a registry,
a wheel from (a), (b) or (d) is pushed as flash-attn-wheels:<key>, so other machines with the same key reuse it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import urllib.parse
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imagematrix.knowledge import flash_attn
from imagematrix.model import labels, paths, secrets
from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.model.flash_attn import RELEASES, WHEEL_REPOSITORY, WheelSpec
from imagematrix.model.matrix import Row
from imagematrix.stages import coverage
from imagematrix.tools import docker, http, pypi
from imagematrix.tools import registry as registry_api

LOCAL_REPOSITORY = "imagematrix-flash-attn"  # where the wheel image lives without a registry


@dataclass(frozen=True)
class Wheel:
    ref: str  # the image holding only the wheel: the row build's FLASH_ATTN_WHEELS
    filename: str
    sha256: str
    origin: str  # mirror, index, registry or compiled, with where from
    file: Path | None = None  # the wheel file on this machine (None: taken from the registry, only the image is known)

    def build_labels(self) -> dict[str, str]:
        return {labels.FLASH_ATTN_SHA256: self.sha256, labels.FLASH_ATTN_ORIGIN: self.origin}


@dataclass(frozen=True)
class Sources:
    """Where a row's flash-attn wheel may come from, read on the build machine (never by a build step): a mirror,
    indexes, the registry, a compile (allowed unless --no-flash-attn-compile); or one wheel image named outright
    (--flash-attn-wheel: CI's build jobs take the flash-attn job's wheel this way, without searching again)."""

    mirror: str | None = None
    indexes: tuple[str, ...] = ()
    compile: bool = True
    wheel: str | None = None


def wheel_repository(registry: str | None) -> str:
    return f"{registry.rstrip('/')}/{WHEEL_REPOSITORY}" if registry else LOCAL_REPOSITORY


def _wheels_dir(key: str) -> Path:
    return paths.cache_dir() / "flash-attn" / key


def not_a_wheel(path: Path) -> str | None:
    """None when path is a wheel as far as a look inside can tell (a zip archive holding a *.dist-info/WHEEL), else
    why not: a mirror or an index may answer an HTML error page, a truncated file or anything else with 200."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        return f"not a wheel: not a zip archive ({exc})"
    if not any(re.fullmatch(r"[^/]+\.dist-info/WHEEL", name) for name in names):
        return "not a wheel: no *.dist-info/WHEEL in the archive"
    return None


def _download_wheel(url: str, dest: Path, name: str, timeout: float = 60) -> tuple[str | None, str | None]:
    """url into dest/name once it is shown to be a wheel (downloaded beside it first): (sha256, None) or (None, why)."""
    unchecked = dest / f".{name}.unchecked"
    sha, problem = http.download(url, unchecked, limit=http.WHEEL_LIMIT, idle=timeout)
    if problem:
        return None, problem
    problem = not_a_wheel(unchecked)
    if problem:
        unchecked.unlink(missing_ok=True)
        return None, f"{secrets.redact_url(url)} is {problem}"
    unchecked.replace(dest / name)
    return sha, None


def from_mirror(wheel: WheelSpec, mirror: str | None, dest: Path) -> tuple[Path | None, str]:
    """The upstream-named wheel under v<version>/ of the mirror (fetched here, on the host: build steps never
    reach the mirror, so a loopback mirror works)."""
    url = wheel.url(mirror or RELEASES)
    sha, problem = _download_wheel(url, dest, wheel.filename, timeout=30)
    if problem:
        return None, problem
    return dest / wheel.filename, f"mirror {secrets.redact_url(url)} (sha256 {sha[:12]})"


FOLLOWED_SCHEMES = ("http", "https")  # an index's links, made absolute against its page: never file:, ftp:, ...


def from_indexes(wheel: WheelSpec, indexes: list[str], dest: Path) -> tuple[Path | None, str]:
    reasons = []
    for index in indexes:
        try:
            links = pypi.links("flash-attn", index)
        except RuntimeFailure as exc:
            reasons.append(str(exc))
            continue
        fitting = [(url, sha) for url, sha in links if wheel.fits(_file_name(url))]
        followed = [(url, sha) for url, sha in fitting if urllib.parse.urlsplit(url).scheme in FOLLOWED_SCHEMES]
        if not followed:
            reasons.append(f"{secrets.redact_url(index)} has no {wheel.wanted}"
                           + (f" (its link {secrets.redact_url(fitting[0][0])} is not http(s): not followed)"
                              if fitting else ""))
            continue
        url, expected = followed[0]
        name = _file_name(url)
        sha, problem = _download_wheel(url, dest, name)
        if problem:
            reasons.append(problem)
            continue
        if expected and sha != expected:
            (dest / name).unlink()
            reasons.append(f"{secrets.redact_url(url)}: sha256 {sha} differs from the index's {expected}")
            continue
        return dest / name, f"index {secrets.redact_url(index)} ({name}, sha256 {sha[:12]})"
    return None, "; ".join(reasons) or "no --flash-attn-index given"


def _file_name(url: str) -> str:
    """The last segment of a link's path (its query left out): the wheel's file name."""
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])


def from_registry(wheel: WheelSpec, registry: str | None) -> tuple[Wheel | None, str]:
    if not registry:
        return None, "no registry given"
    return _wheel_image(wheel_repository(registry), wheel.key)


def _wheel_image(repo: str, key: str) -> tuple[Wheel | None, str]:
    try:
        found = registry_api.labels(repo, key)
    except RuntimeFailure as exc:
        return None, f"cannot read {repo}:{key}: {exc}"
    if not found or labels.FLASH_ATTN_SHA256 not in found:
        return None, f"{repo}:{key} does not exist"
    return (Wheel(f"{repo}:{key}", found.get(labels.FLASH_ATTN_FILE, ""), found[labels.FLASH_ATTN_SHA256],
                  f"registry {repo}:{key} ({found.get(labels.FLASH_ATTN_ORIGIN, 'origin unknown')})"),
            f"{repo}:{key} exists")


def given(row: Row, spec: WheelSpec, ref: str) -> Wheel:
    """The wheel image that --flash-attn-wheel names, taken as it is (no mirror, index or compile is tried): its tag
    must be the row's key and the registry must have it with the wheel's labels."""
    repo, _, key = ref.rpartition(":")
    if not repo or "/" in key or key != spec.key:
        raise InputError(f"--flash-attn-wheel {ref}: row {row.id} needs the wheel tagged {spec.key}",
                         fix=f"pass REGISTRY/{WHEEL_REPOSITORY}:{spec.key}, or leave the option out to search")
    wheel, why = _wheel_image(repo, key)
    if wheel is None:
        raise RuntimeFailure(f"row {row.id}, stage flash-attn: --flash-attn-wheel {ref}: {why}")
    return wheel


def describe(wheel: WheelSpec, registry: str | None, ask_registry: bool = True) -> tuple[str, str]:
    """(source, sentence): where a build of the row would get its flash-attn wheel, for `plan` and CI.
    source is one of registry, prebuilt, compile, none."""
    if registry and ask_registry:
        found, _ = from_registry(wheel, registry)
        if found:
            return "registry", f"reuses {found.ref} (sha256 {found.sha256[:12]})"
    if wheel.prebuilt == "verified":
        return "prebuilt", f"prebuilt {wheel.filename} from the mirror (default: GitHub's releases) or an index"
    if flash_attn.toolchain(wheel.cuda) and wheel.archs:  # the sdist: the row's lock records it
        minutes = flash_attn.compile_estimate(len(wheel.archs), 16) / 60
        return "compile", (f"compiles key {wheel.key} from the sdist (about {minutes:.0f} min on 16 cores), "
                           "unless a mirror or an index has it")
    return "none", (f"no prebuilt wheel and no compile for key {wheel.key}: give a --flash-attn-mirror or "
                    "--flash-attn-index")


def compile_wheel(row: Row, context: Path, secrets_files: dict[str, Path], dest: Path, log_path: Path,
                  progress: Callable[[str], None], build_args: dict[str, str] | None = None) -> tuple[Path, dict]:
    """Build the row's flash-attn-wheel-out target (the compile stage) and export the wheel into dest.

    build_args: the base's (BASE_REGISTRY for a base published by digest)."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = ["build", "--progress=plain", "--target", "flash-attn-wheel-out", "--output", f"type=local,dest={dest}"]
    cmd += [a for sid, path in sorted(secrets_files.items()) for a in ("--secret", f"id={sid},src={path}")]
    cmd += [a for k, v in sorted((build_args or {}).items()) for a in ("--build-arg", f"{k}={v}")]
    cmd.append(str(context))

    def on_line(line: str) -> None:
        if "flash-attn compile:" in line:
            progress(line.split("flash-attn compile:", 1)[1].strip())

    status = docker.run_logged(cmd, log_path, env={**os.environ, "DOCKER_BUILDKIT": "1"}, on_line=on_line)
    wheels = sorted(dest.glob("flash_attn-*.whl"))
    if status != 0 or not wheels:
        tail = log_path.read_text(errors="replace").splitlines()[-25:]
        raise RuntimeFailure(f"row {row.id}, stage flash-attn: the compile failed (full log: {log_path}):\n"
                             + "\n".join("    " + line for line in tail))
    record_path = dest / "record.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    return wheels[-1], record


def check_compiled(row: Row, spec: WheelSpec, wheel: Path, log: Callable[[str], None]) -> None:
    """The compiled wheel's device code (cuobjdump, on this machine) has machine code for every architecture it was
    compiled for; else it is removed from the cache and the row fails, naming the file and the architecture, before
    the wheel is packaged or pushed."""
    problems = coverage.wheel_lacks(wheel, spec.archs)
    if problems:
        wheel.unlink(missing_ok=True)
        raise RuntimeFailure(f"row {row.id}, stage flash-attn: the compiled wheel lacks architectures it was compiled "
                             f"for (sm_{', sm_'.join(spec.arch_tags)}); not cached, not pushed:\n  "
                             + "\n  ".join(problems))
    log(f"flash-attn: the compiled wheel has machine code for sm_{', sm_'.join(spec.arch_tags)}")


def package(wheel: Path, sha256: str, origin: str, ref: str, log_path: Path) -> Wheel:
    """An image holding only the wheel (FROM scratch), labelled with its file name, sha256 and origin."""
    with tempfile.TemporaryDirectory(prefix="fa-image-", dir=paths.scratch_dir()) as tmp:
        shutil.copy2(wheel, Path(tmp) / wheel.name)
        (Path(tmp) / "Dockerfile").write_text(f"FROM scratch\nCOPY {wheel.name} /\n")
        cmd = ["build", "-t", ref, "--label", f"{labels.FLASH_ATTN_SHA256}={sha256}",
               "--label", f"{labels.FLASH_ATTN_ORIGIN}={origin}", "--label", f"{labels.FLASH_ATTN_FILE}={wheel.name}",
               tmp]
        if docker.run_logged(cmd, log_path, env={**os.environ, "DOCKER_BUILDKIT": "1"}) != 0:
            raise RuntimeFailure(f"cannot build the wheel image {ref} (log: {log_path})")
    return Wheel(ref, wheel.name, sha256, origin, file=wheel)


def export(wheel: Wheel, spec: WheelSpec, dest: Path) -> Path | None:
    """Copy the wheel file into dest laid out like the releases, dest/v<version>/<file name>, so that
    `--flash-attn-mirror file://DEST` hands it to a build elsewhere (CI: pull requests from forks, which cannot push
    it to the registry). Compiled and mirror wheels carry the upstream file name the mirror lookup asks for.
    None for a wheel taken from the registry: there is no file here, and the registry already serves it."""
    if wheel.file is None:
        return None
    target = dest / f"v{spec.version}" / wheel.file.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(wheel.file, target)
    return target


def ensure(row: Row, *, context: Path, registry: str | None, mirror: str | None, indexes: list[str],
           secrets_files: dict[str, Path], log_dir: Path, log: Callable[[str], None], allow_compile: bool = True,
           push: bool = True, build_args: dict[str, str] | None = None) -> Wheel:
    """The row's wheel image, from the first source that has the wheel; each choice is logged with its reason.
    build_args go to the compile's build (the base's BASE_REGISTRY)."""
    spec = flash_attn.wheel_spec(row)
    key = spec.key
    ref = f"{wheel_repository(registry)}:{key}"
    dest = _wheels_dir(key)
    dest.mkdir(parents=True, exist_ok=True)
    reasons = []

    def publish(wheel: Wheel) -> Wheel:
        if registry and push:
            proc = docker.run("push", wheel.ref)
            if proc.returncode != 0:
                log(f"flash-attn: could not push {wheel.ref} ({proc.stderr.strip()[-200:]}); it stays local")
            else:
                log(f"flash-attn: pushed {wheel.ref} for reuse")
        return wheel

    file_sources = (("mirror", lambda: from_mirror(spec, mirror, dest)),
                    ("indexes", lambda: from_indexes(spec, indexes, dest)))
    for source, fetch in file_sources:  # in order: the first that has the wheel wins
        found, why = fetch()
        if found:
            log(f"flash-attn: using {why}")
            return publish(package(found, paths.file_sha256(found), why, ref, log_dir / "flash-attn-image.log"))
        reasons.append(f"{source}: {why}")
        log(f"flash-attn: {source}: {why}")
    wheel, why = from_registry(spec, registry)
    if wheel:
        log(f"flash-attn: using {wheel.origin}")
        return wheel
    reasons.append(f"registry: {why}")
    log(f"flash-attn: registry: {why}")
    if allow_compile and flash_attn.toolchain(row.cuda) is None:
        reasons.append(f"compile: no CUDA {row.cuda} compiler wheels in {paths.FLASH_ATTN.relative_to(paths.ROOT)} "
                       "(toolchains)")
        allow_compile = False
    if not allow_compile:
        raise RuntimeFailure(f"row {row.id}, stage flash-attn: no source has the wheel for key {key}:\n  "
                             + "\n  ".join(reasons)
                             + "\n  fix: pass --flash-attn-mirror or --flash-attn-index, push a compiled wheel to "
                               f"{wheel_repository(registry or '<registry>')}:{key}, or allow the compile")
    estimate = flash_attn.compile_estimate(len(spec.archs), os.cpu_count() or 1)
    log(f"flash-attn: compiling {spec.version} from the sdist for sm_{', sm_'.join(spec.arch_tags)} "
        f"(no source has key {key}; measured cost suggests about {estimate / 60:.0f} min on {os.cpu_count()} cores)")
    compiled, record = compile_wheel(row, context, secrets_files, dest / "compiled", log_dir / "flash-attn-compile.log",
                                     lambda msg: log(f"flash-attn: {msg}"), build_args)
    check_compiled(row, spec, compiled, log)
    sha = paths.file_sha256(compiled)
    origin = (f"compiled from {record.get('sdist', 'the sdist')} in {record.get('seconds', '?')} s, "
              f"{record.get('units', '?')} units, MAX_JOBS={record.get('jobs', '?')}")
    log(f"flash-attn: {origin}: {compiled.name} sha256 {sha[:12]}")
    return publish(package(compiled, sha, origin, ref, log_dir / "flash-attn-image.log"))
