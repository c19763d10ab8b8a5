"""`build.py disk`: does this machine have the free disk a row's build needs? (CI checks before building)."""

from __future__ import annotations

import shutil
from pathlib import Path

from imagematrix.cli.common import err, load, out, row_options
from imagematrix.model import fields
from imagematrix.stages import disk_budget
from imagematrix.stages.render import context_name


def add_arguments(p) -> None:
    row_options(p)
    p.add_argument("--path", type=Path, default=None,
                   help="the filesystem to check (default: /var/lib/docker where it exists, else /)")
    p.add_argument("--platform", choices=fields.PLATFORMS, default=None,
                   help="only this platform's image (build --platform); default: every platform of the row, as "
                        "`build` without --platform holds them all")


def run(args) -> int:
    m, rows = load(args)
    where = args.path or next(p for p in (Path("/var/lib/docker"), Path("/")) if p.exists())
    free = shutil.disk_usage(where).free
    short = 0
    for row in rows:
        wanted = [args.platform] if args.platform else list(row.platforms)
        if args.platform and args.platform not in row.platforms:
            out.print(f"{row.id}: no {args.platform} image (platforms: {', '.join(row.platforms)})")
            continue
        budget = disk_budget.platforms_budget(m.root, row.id, [context_name(row.id, p) for p in wanted])
        problem = disk_budget.disk_verdict(row.id, budget, free, str(where))
        if problem:
            short += 1
            err.print(f"[red]failed:[/] {problem}", markup=True, soft_wrap=True)
        else:
            out.print(f"{row.id}: needs about {disk_budget.gb(budget.need)} GB ({budget.basis}), {disk_budget.gb(free)} GB "
                      f"free on {where}", soft_wrap=True)
    return 1 if short else 0
