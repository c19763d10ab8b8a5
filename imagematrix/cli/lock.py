"""`build.py lock`: hash-pinned locks/<row-id>.txt (and locks/tools.txt)."""

from __future__ import annotations

from imagematrix.cli.common import err, load, out, row_options
from imagematrix.stages import locks


def add_arguments(p) -> None:
    row_options(p)
    p.add_argument("--jobs", type=int, default=4, help="rows resolved in parallel (default 4)")
    p.add_argument("--refresh", action="store_true",
                   help="resolve against the index as it is now, not at the time each current lock records "
                        "(picks up newer releases of unpinned dependencies)")
    p.add_argument("--as-of", metavar="DATE", default=None,
                   help="resolve as the index stood at DATE (YYYY-MM-DD, UTC), e.g. shortly after the newest release "
                        "among the row's pins: the dependencies its upstream users ran; recorded in the lock")


def run(args) -> int:
    m, rows = load(args)
    as_of = locks.parse_as_of(args.as_of) if args.as_of else None
    with err.status(f"locking {len(rows)} row(s) with uv (hashes)" + (f" as of {as_of}" if as_of else "")):
        written = locks.lock_rows(m, rows, args.jobs, args.refresh, as_of)
    for path, changed, packages, moved in written:
        out.print(f"{'wrote' if changed else 'unchanged'} {path.relative_to(m.root)} ({packages} packages)")
        for line in moved or []:  # what a refresh (or a changed row) moved: `package: old -> new`
            out.print(f"  {line}", markup=False, highlight=False)
        if changed and moved == []:
            out.print("  no package changed (only the header: the cutoff or the resolution input)")
    return 0
