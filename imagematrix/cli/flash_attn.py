"""`build.py flash-attn`: a row's flash-attn wheel on its own: where it would come from, get it (compiling when no
source has it) and keep it in the registry, or import one compiled elsewhere (e.g. on a GPU host in host mode)."""

from __future__ import annotations

from pathlib import Path

from imagematrix.cli.common import (
    build_input_options,
    build_inputs,
    flash_attn_sources,
    load,
    out,
    registry_options,
    row_options,
)
from imagematrix.knowledge.flash_attn import wheel_spec
from imagematrix.model.errors import InputError
from imagematrix.stages import flash_attn, flash_attn_store


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
            spec = wheel_spec(row)
            source, sentence = flash_attn.describe(spec, args.registry)
            out.print(f"{row.id}: key {spec.key}\n  {source}: {sentence}", soft_wrap=True)
        return 0
    if len(rows) != 1:
        raise InputError(f"`flash-attn {args.action}` takes one row", fix="pass --row ID")
    row, spec = rows[0], wheel_spec(rows[0])
    checked = flash_attn_store.checked_import(spec, args.wheel, args.record) if args.action == "import" else None
    inputs, sources = build_inputs(args), flash_attn_sources(args)
    flash_attn_store.prepare(args.registry, say)
    log_dir = args.log_dir / row.id
    log_dir.mkdir(parents=True, exist_ok=True)
    if checked:
        sha, origin = checked
        image = flash_attn_store.import_wheel(spec, args.wheel, sha, origin, args.registry, log_dir)
        say(f"{row.id}: pushed {image.ref} (sha256 {sha}; {origin})")
        return 0
    wheel = flash_attn_store.get(m, row, inputs, sources, registry=args.registry, push=not args.no_push, log_dir=log_dir,
                                 log=say)
    say(f"{row.id}: {wheel.ref} holds {wheel.filename or 'the wheel'} (sha256 {wheel.sha256})")
    if not args.no_push:
        flash_attn_store.check_pushed(row, wheel, args.registry)
    if args.wheel_dir:
        copied = flash_attn.export(wheel, spec, args.wheel_dir)
        say(f"{row.id}: copied the wheel to {copied}" if copied else
            f"{row.id}: the wheel came from the registry, no file copied to {args.wheel_dir}")
    return 0


def say(message: str) -> None:
    out.print(message, soft_wrap=True)
