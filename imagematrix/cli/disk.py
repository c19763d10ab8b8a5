"""`build.py disk`: does this machine have the free disk a row's build needs? (CI checks before building)."""

from __future__ import annotations

import shutil
from pathlib import Path

from imagematrix.cli.common import err, load, out, row_options
from imagematrix.stages import sizes


def add_arguments(p) -> None:
    row_options(p)
    p.add_argument("--path", type=Path, default=None,
                   help="the filesystem to check (default: /var/lib/docker where it exists, else /)")


def run(args) -> int:
    m, rows = load(args)
    where = args.path or next(p for p in (Path("/var/lib/docker"), Path("/")) if p.exists())
    free = shutil.disk_usage(where).free
    short = 0
    for row in rows:
        budget = sizes.disk_budget(sizes.load(sizes.baseline_path(m.root, row.id)))
        problem = sizes.disk_verdict(row.id, budget, free, str(where))
        if problem:
            short += 1
            err.print(f"[red]failed:[/] {problem}", markup=True, soft_wrap=True)
        else:
            out.print(f"{row.id}: needs about {sizes.gb(budget.need)} GB ({budget.basis}), {sizes.gb(free)} GB "
                      f"free on {where}", soft_wrap=True)
    return 1 if short else 0
