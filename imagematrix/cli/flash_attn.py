"""`build.py flash-attn`: a row's flash-attn wheel on its own: where it would come from, get it (compiling when no
source has it) and keep it in the registry, or import one compiled elsewhere (e.g. on a GPU host in host mode)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from imagematrix.cli.common import build_input_options, build_inputs, load, out, registry_options, row_options
from imagematrix.knowledge import flash_attn as fa_knowledge
from imagematrix.model import paths, tags
from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.stages import builder, flash_attn, render
from imagematrix.tools import docker, host


def add_arguments(p) -> None:
    p.add_argument("action", choices=("show", "get", "import"),
                   help="show: key and source of each flash-attn row; get: the wheel from the first source that "
                        "has it (compiling else), pushed as flash-attn-wheels:<key>; import: push WHEEL as the row's")
    p.add_argument("wheel", nargs="?", type=Path, help="import: the wheel file")
    p.add_argument("--record", type=Path, help="import: the compile's record.json (flash_attn_compile.py --record)")
    p.add_argument("--no-push", action="store_true",
                   help="get: keep the wheel image local, push nothing (CI: pull requests without registry credentials)")
    p.add_argument("--wheel-dir", type=Path, metavar="DIR",
                   help="get: also copy the wheel file to DIR/v<version>/, a layout `--flash-attn-mirror file://DIR` "
                        "reads (CI hands it to the row builds this way when it cannot push)")
    row_options(p)
    registry_options(p)
    build_input_options(p)


def run(args) -> int:
    m, rows = load(args)
    rows = [r for r in rows if r.flash_attn]
    if not rows:
        raise InputError("no selected row pins flash_attn", fix="pick a row with flash_attn (see `build.py plan`)")
    if args.action != "get" and (args.no_push or args.wheel_dir):
        raise InputError("--no-push and --wheel-dir are options of `flash-attn get`", fix="drop them, or use get")
    if args.action == "show":
        for row in rows:
            source, sentence = flash_attn.describe(row, args.registry)
            out.print(f"{row.id}: key {fa_knowledge.key(row)}\n  {source}: {sentence}", soft_wrap=True)
        return 0
    if len(rows) != 1:
        raise InputError(f"`flash-attn {args.action}` takes one row", fix="pass --row ID")
    row = rows[0]
    checked = _checked_import(row, args) if args.action == "import" else None
    inputs = build_inputs(args)
    docker.require_daemon()
    if args.registry == tags.DEFAULT_REGISTRY:
        host.ensure_registry(lambda msg: out.print(msg, soft_wrap=True))
    log_dir = args.log_dir / row.id
    log_dir.mkdir(parents=True, exist_ok=True)
    if checked:
        return _import(row, args, log_dir, *checked)
    drift = render.drift(m, render.render(m, [row]), full=False)
    if drift:
        raise InputError("the generated build context differs from the matrix:\n  " + "\n  ".join(drift),
                         fix="run `python build.py render` (and commit the result)")
    builder.ensure_base(row, inputs, lambda msg: out.print(msg, soft_wrap=True), args.registry)
    with tempfile.TemporaryDirectory(prefix="secrets-", dir=paths.scratch_dir()) as secret_dir:
        wheel = flash_attn.ensure(row, context=render.generated_dir(m) / row.id, registry=args.registry,
                                  mirror=inputs.flash_attn_mirror, indexes=list(inputs.flash_attn_indexes),
                                  secrets_files=inputs.write_secrets(Path(secret_dir)), log_dir=log_dir,
                                  log=lambda msg: out.print(msg, soft_wrap=True), allow_compile=inputs.flash_attn_compile,
                                  push=not args.no_push, build_args=builder.base_build_args(row, args.registry))
    out.print(f"{row.id}: {wheel.ref} holds {wheel.filename or 'the wheel'} (sha256 {wheel.sha256})", soft_wrap=True)
    if not args.no_push:
        pushed, why = flash_attn.from_registry(row, args.registry)
        if pushed is None:  # ensure() logs a failed push and goes on; `get` exists to leave the wheel there
            raise RuntimeFailure(f"row {row.id}, stage flash-attn: {wheel.ref} is not in the registry after the push "
                                 f"({why})")
    if args.wheel_dir:
        copied = flash_attn.export(wheel, row, args.wheel_dir)
        out.print(f"{row.id}: copied the wheel to {copied}" if copied else
                  f"{row.id}: the wheel came from the registry, no file copied to {args.wheel_dir}", soft_wrap=True)
    return 0


def _checked_import(row, args) -> tuple[str, str]:
    """(sha256, origin) of the wheel to import, after every check of the input (exit 2 before any work)."""
    wheel = args.wheel
    if wheel is None or not wheel.is_file():
        raise InputError(f"import needs an existing wheel file (got {wheel})", fix="pass the .whl path")
    if not fa_knowledge.index_match(wheel.name, row):
        raise InputError(f"{wheel.name} is not a flash-attn {row.flash_attn} wheel for {fa_knowledge.local_version(row)} "
                         f"cp{row.python.replace('.', '')}",
                         fix=f"compile it for the row (flash_attn_compile.py names it flash_attn-{row.flash_attn}+"
                             f"{fa_knowledge.local_version(row)}-cp{row.python.replace('.', '')}-...)")
    record = flash_attn.compile_record(args.record) if args.record else None
    if record is not None:
        want = ";".join(a.replace(".", "") for a in fa_knowledge.archs(row))
        if ";".join(record.archs) != want:
            raise InputError(f"{args.record} says archs {record.archs}, the row's key needs {want}",
                             fix="compile for the row's flash_attn_archs, or change them")
    sha = paths.file_sha256(wheel)
    if record is not None and record.sha256 and record.sha256 != sha:
        raise InputError(f"{wheel} has sha256 {sha}, its record says {record.sha256}", fix="pass the matching pair")
    if record is None:
        return sha, f"imported from {wheel.name}"
    seconds, units, jobs, nvcc = ("?" if v is None else v for v in (record.seconds, record.units, record.jobs,
                                                                     record.nvcc_release))
    origin = (f"imported: compiled elsewhere from {record.sdist or 'the sdist'} in {seconds} s, {units} units, "
              f"MAX_JOBS={jobs}, nvcc {nvcc}")
    return sha, origin


def _import(row, args, log_dir: Path, sha: str, origin: str) -> int:
    wheel = args.wheel
    ref = f"{flash_attn.wheel_repository(args.registry)}:{fa_knowledge.key(row)}"
    image = flash_attn.package(wheel, sha, origin, ref, log_dir / "flash-attn-image.log")
    proc = docker.run("push", image.ref)
    if proc.returncode != 0:
        raise RuntimeFailure(f"cannot push {image.ref}: {proc.stderr.strip()[-400:]}")
    out.print(f"{row.id}: pushed {image.ref} (sha256 {sha}; {origin})", soft_wrap=True)
    return 0
