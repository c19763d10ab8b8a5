"""`build.py lock`: hash-pinned locks/<row-id>.txt (and locks/tools.txt)."""

from __future__ import annotations

from imagematrix.cli.common import err, load, out, row_options
from imagematrix.stages import locks

HELP = "write hash-pinned locks/<row-id>.txt (and locks/tools.txt)"


def add_arguments(p) -> None:
    row_options(p)
    p.add_argument("--jobs", type=int, default=4, help="rows resolved in parallel (default 4)")
    p.add_argument("--refresh", action="store_true",
                   help="resolve against the index as it is now, not at the time each current lock records "
                        "(picks up newer releases of unpinned dependencies)")


def run(args) -> int:
    m, rows = load(args)
    with err.status(f"locking {len(rows)} row(s) with uv (hashes)"):
        written = locks.lock_rows(m, rows, args.jobs, args.refresh)
    for path, changed, packages in written:
        out.print(f"{'wrote' if changed else 'unchanged'} {path.relative_to(m.root)} ({packages} packages)")
    return 0
