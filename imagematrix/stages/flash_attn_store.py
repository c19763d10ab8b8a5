"""A row's flash-attn wheel kept in the registry on its own, outside a row build (`build.py flash-attn get|import`):
get it from the first source that has it (compiling else, stages/flash_attn.ensure) and check that its push landed,
or check a wheel compiled elsewhere (a GPU host in host mode) against the row's spec and push it as
flash-attn-wheels:<key>."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from imagematrix.knowledge.flash_attn import wheel_spec
from imagematrix.model import datafile, paths, tags
from imagematrix.model.datafile import Short
from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.model.flash_attn import WheelSpec
from imagematrix.model.matrix import Matrix, Row
from imagematrix.stages import builder, coverage, flash_attn, generated
from imagematrix.tools import docker, host


class CompileRecord(BaseModel):
    """What `flash-attn import --record` takes of flash_attn_compile.py's record.json (its other keys unread)."""
    model_config = ConfigDict(extra="allow")

    archs: list[Short] = []
    sha256: Short = ""
    sdist: Short | None = None
    seconds: float | None = None
    units: int | None = None
    jobs: int | None = None
    nvcc_release: Short | None = None


def compile_record(path: Path) -> CompileRecord:
    """A compile's record.json; one that is not (not JSON, the wrong shape or types, too large) is an InputError
    naming it."""
    fix = "pass the record.json the compile wrote (flash_attn_compile.py --record)"
    data = datafile.load_json(path, fix=fix)
    try:
        return CompileRecord.model_validate(data, strict=True)
    except ValidationError as exc:
        raise InputError(f"not a flash-attn compile record: {datafile.describe(exc)}", where=str(path), fix=fix) \
            from None


def prepare(registry: str, log: Callable[[str], None]) -> None:
    """What both actions need before any work: the daemon, and the embedded registry when it is the one named."""
    docker.require_daemon()
    if registry == tags.DEFAULT_REGISTRY:
        host.ensure_registry(log)


def get(matrix: Matrix, row: Row, inputs: builder.BuildInputs, sources: flash_attn.Sources, *, registry: str,
        push: bool, log_dir: Path, log: Callable[[str], None]) -> flash_attn.Wheel:
    """The row's wheel image (stages/flash_attn.ensure, from the row's generated context as render left it and its
    base image), pushed with push (check_pushed tells whether the push landed)."""
    generated.read(matrix, [row])  # a stale context is refused with the fix, as by `build`
    builder.ensure_base(row, inputs, log, registry)
    with tempfile.TemporaryDirectory(prefix="secrets-", dir=paths.scratch_dir()) as secret_dir:
        wheel = flash_attn.ensure(row, context=generated.generated_dir(matrix) / row.id, registry=registry,
                                  mirror=sources.mirror, indexes=list(sources.indexes),
                                  secrets_files=inputs.write_secrets(Path(secret_dir)), log_dir=log_dir, log=log,
                                  allow_compile=sources.compile, push=push,
                                  build_args=builder.base_build_args(row, registry))
    return wheel


def check_pushed(row: Row, wheel: flash_attn.Wheel, registry: str) -> None:
    """A RuntimeFailure unless the registry has the row's wheel: ensure only logs a failed push and goes on, and
    `get` exists to leave the wheel there."""
    pushed, why = flash_attn.from_registry(wheel_spec(row), registry)
    if pushed is None:
        raise RuntimeFailure(f"row {row.id}, stage flash-attn: {wheel.ref} is not in the registry after the push ({why})")


def checked_import(spec: WheelSpec, wheel: Path | None, record_path: Path | None) -> tuple[str, str]:
    """(sha256, origin) of a wheel to import, after every check of the input (InputError before any work): an
    existing file named as the row's wheel, the compile's record (when given) naming the key's archs and sha256, and
    machine code for each of the key's archs in its device code (cuobjdump)."""
    if wheel is None or not wheel.is_file():
        raise InputError(f"import needs an existing wheel file (got {wheel})", fix="pass the .whl path")
    if not spec.fits(wheel.name):
        raise InputError(f"{wheel.name} is not a {spec.wanted}",
                         fix=f"compile it for the row (flash_attn_compile.py names it flash_attn-{spec.version}+"
                             f"{spec.local_version}-{spec.cp}-...)")
    record = compile_record(record_path) if record_path else None
    if record is not None:
        want = ";".join(spec.arch_tags)
        if ";".join(record.archs) != want:
            raise InputError(f"{record_path} says archs {record.archs}, the row's key needs {want}",
                             fix="compile for the row's flash_attn_archs, or change them")
    sha = paths.file_sha256(wheel)
    if record is not None and record.sha256 and record.sha256 != sha:
        raise InputError(f"{wheel} has sha256 {sha}, its record says {record.sha256}", fix="pass the matching pair")
    lacking = coverage.wheel_lacks(wheel, spec.archs)
    if lacking:
        raise InputError(f"{wheel.name} lacks architectures of the row's key (sm_{', sm_'.join(spec.arch_tags)}): "
                         + "; ".join(lacking),
                         fix="compile it for the row's flash_attn_archs (flash_attn_compile.py --archs)")
    if record is None:
        return sha, f"imported from {wheel.name}"
    seconds, units, jobs, nvcc = ("?" if v is None else v for v in (record.seconds, record.units, record.jobs,
                                                                     record.nvcc_release))
    return sha, (f"imported: compiled elsewhere from {record.sdist or 'the sdist'} in {seconds} s, {units} units, "
                 f"MAX_JOBS={jobs}, nvcc {nvcc}")


def import_wheel(spec: WheelSpec, wheel: Path, sha: str, origin: str, registry: str, log_dir: Path) -> flash_attn.Wheel:
    """The checked wheel as the row's wheel image, pushed as <registry>/flash-attn-wheels:<key>."""
    ref = f"{flash_attn.wheel_repository(registry)}:{spec.key}"
    image = flash_attn.package(wheel, sha, origin, ref, log_dir / "flash-attn-image.log")
    proc = docker.run("push", image.ref)
    if proc.returncode != 0:
        raise RuntimeFailure(f"cannot push {image.ref}: {proc.stderr.strip()[-400:]}")
    return image
