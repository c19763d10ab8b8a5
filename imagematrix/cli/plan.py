"""`build.py plan`: rows whose input digest differs from the registry's, as text, bake file or CI matrix."""

from __future__ import annotations

import json
import os
from pathlib import Path

from imagematrix.cli.common import err, out, registry_options, row_options
from imagematrix.model import matrix as matrix_mod
from imagematrix.stages import builder, generated
from imagematrix.stages import plan as plan_stage


def add_arguments(p) -> None:
    row_options(p)
    p.add_argument("--match", action="append", metavar="PATTERN", help="rows whose id matches this shell pattern (repeatable)")
    p.add_argument("--all", action="store_true", help="every selected row, even when the registry has its input digest")
    out_format = p.add_mutually_exclusive_group()
    out_format.add_argument("--bake", action="store_true", help="print the buildx bake file (JSON), like `bake --print`")
    out_format.add_argument("--github", action="store_true",
                            help="print a GitHub Actions strategy.matrix (JSON); with $GITHUB_OUTPUT set, also write "
                                 "`matrix` and `count` there, and `flash_attn` and `flash_attn_count`: the flash-attn "
                                 "wheel keys to compile (no known prebuilt wheel, not in the registry), one row each")
    registry_options(p)


def run(args) -> int:
    m = matrix_mod.load(args.matrix)
    rows = plan_stage.select(m, args.rows, args.match)
    # --all skips reading final tags, not the flash-attn wheels: a key already in the registry is never recompiled
    planned = plan_stage.plan(m, rows, args.registry, ask_registry=not (args.bake or args.all),
                              ask_wheels=not args.bake)
    if args.bake:
        secrets = {"build-env": Path("<secrets>/build-env"), "ca-cert": Path("<secrets>/ca-cert")}
        items = [(p.item, p.candidate) for p in planned]
        out.print_json(json.dumps(builder.bake_definition(items, generated.generated_dir(m), secrets)))
        return 0
    todo = [p for p in planned if args.all or p.changed]
    if args.github:
        print(json.dumps(plan_stage.github_matrix(todo), separators=(",", ":")))
        # the other platforms' images (linux/arm64) of every selected multi-platform row that its index lacks
        platforms = plan_stage.platform_matrix(m, planned, args.registry, everything=args.all)
        if os.environ.get("GITHUB_OUTPUT"):
            with open(os.environ["GITHUB_OUTPUT"], "a") as f:
                f.write(plan_stage.github_outputs(todo, platforms))
        err.print(f"{len(todo)} of {len(planned)} row(s) to build"
                  + (f"; {len(platforms['include'])} image(s) of other platforms (build-platforms job)"
                     if platforms["include"] else ""))
        return 0
    for p in planned:
        state = "build" if p in todo else "up to date"
        out.print(f"{p.row.id}: {state} (input {p.digest[:19]}, registry {(p.published or 'none')[:19]}) "
                  f"-> {p.candidate}")
        if p.flash_attn:
            out.print(f"  flash-attn: {p.flash_attn[1]}")
    return 0
