"""`build.py render`: dockerfiles/generated/<row-id>/ from the templates (or --check for drift)."""

from __future__ import annotations

import argparse
from pathlib import Path

from imagematrix.cli.common import err, load, out, row_options
from imagematrix.model import paths
from imagematrix.stages import generated, render


def add_arguments(p) -> None:
    row_options(p)
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 when committed output differs")
    p.add_argument("--patches", type=Path, default=paths.PATCHES, help=argparse.SUPPRESS)


def run(args) -> int:
    """Each row on its own: a row with bad input is not written (exit 2 at the end, naming it), the others are."""
    m, rows = load(args)
    rendered, failed = render.render_each(m, rows, args.patches, all_platforms=True)
    keep = frozenset(failed)
    if args.check:
        problems = generated.drift(m, rendered, full=not args.rows, keep=keep, patch_dir=args.patches)
        if problems:
            err.print("generated Dockerfiles differ from what matrix.yaml renders:\n  " + "\n  ".join(problems)
                      + "\n  fix: run `python build.py render` and commit the result")
        if failed:
            raise render.errors_of(failed)
        if problems:
            return 1
        out.print(f"dockerfiles/generated is up to date ({len({item.row.id for item in rendered})} row(s))")
        return 0
    changed = generated.write(m, rendered, prune=not args.rows, keep=keep, patch_dir=args.patches) if rendered else []
    for item in rendered:
        mark = "wrote" if item.name in changed else "unchanged"
        out.print(f"{mark} dockerfiles/generated/{item.name}/ (input {item.context_digest()[:19]})")
    for name in changed:
        if name not in {item.name for item in rendered}:
            out.print(f"removed dockerfiles/generated/{name}/ (no longer in the matrix)")
    for row_id in failed:
        out.print(f"not written dockerfiles/generated/{row_id}/ (bad input: see below)")
    if failed:
        raise render.errors_of(failed)
    return 0
