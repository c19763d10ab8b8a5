"""`build.py lock`: hash-pinned locks/<row-id>.txt (and locks/tools.txt); `lock --check`: are they what their
cutoffs resolve to."""

from __future__ import annotations

import time

from imagematrix.cli.common import err, load, out, row_options
from imagematrix.model.errors import InputError, InputErrors, RuntimeFailure
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
    p.add_argument("--check", action="store_true",
                   help="write nothing: re-resolve each lock at the cutoff it records (`# exclude-newer`, uv's cache "
                        "revalidated). Exit 1 when a lock no longer installs as written (its pins, held at the "
                        "cutoff, resolve to other files or not at all), naming each pin; a lock that still installs "
                        "as written while the cutoff now resolves to newer releases is reported and passes; every "
                        "row also checks locks/tools.txt")
    p.add_argument("--strict", action="store_true",
                   help="with --check: exit 1 also when the cutoff now resolves to newer releases than a lock pins "
                        "(for a scheduled job that re-locks; not for CI on a fixed commit: the index moves)")


def run(args) -> int:
    m, rows = load(args)
    if args.strict and not args.check:
        raise InputError("--strict is an option of --check", fix="add --check (or drop --strict)")
    if args.check:
        if args.refresh or args.as_of:
            raise InputError("--check re-resolves each lock at its own cutoff: it takes neither --refresh nor --as-of",
                             fix="drop --refresh/--as-of (or drop --check to re-lock)")
        return _check(m, rows, args)
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


def _check(m, rows, args) -> int:
    started = time.monotonic()
    with err.status(f"re-resolving {len(rows)} lock(s) at their cutoffs with uv"):
        results = locks.check_locks(m, rows, args.jobs, tools=not args.rows)
    differ, newer, errors, failures = [], [], [], []
    for checked in results:
        name = checked.path.relative_to(m.root)
        if checked.error is not None:
            (errors if isinstance(checked.error, InputError) else failures).append(checked.error)
            _say(f"not checked {name} (cutoff {checked.cutoff}, {checked.seconds:.1f} s): see below")
        elif checked.differences:
            differ.append(checked)
            _say(f"differs {name} (cutoff {checked.cutoff}, {checked.seconds:.1f} s): its own pins, held at the "
                 "cutoff: locked -> on the index", checked.differences)
        elif checked.newer:
            newer.append(checked)
            _say(f"installs as locked {name} (cutoff {checked.cutoff}, {checked.seconds:.1f} s); the cutoff now "
                 "resolves newer releases: locked -> resolved", checked.newer)
        else:
            _say(f"matches {name} (cutoff {checked.cutoff}, {checked.packages} packages, {checked.seconds:.1f} s)")
    out.print(f"checked {len(results)} lock(s) in {time.monotonic() - started:.1f} s: {len(differ)} differ, "
              f"{len(newer)} with newer releases under their cutoff")
    if errors:
        raise InputErrors(errors)
    if failures:
        raise RuntimeFailure("\n".join(str(f) for f in failures))
    if newer:
        err.print(f"{len(newer)} lock(s) still install exactly as written, but their cutoff now resolves to newer "
                  "releases: the index lists files dated before the cutoff that it did not list when the lock was "
                  "written (a backdated or re-dated upload), or the lock was resolved from a stale cache. "
                  + ("This fails --strict.\n" if args.strict else "Advice only (--strict makes it fail).\n")
                  + f"  to take them: run `python build.py lock{_rows(m, newer)}` (same cutoffs), then `python build.py "
                  "render`, and commit locks/ and dockerfiles/generated/ (the images change)", markup=False,
                  highlight=False)
    if differ:
        err.print(f"{len(differ)} lock(s) no longer install as written: the index serves other files for their pins, "
                  "or no longer serves the pins at their cutoff\n"
                  f"  fix: run `python build.py lock{_rows(m, differ)}` (it resolves at the same cutoffs), then "
                  "`python build.py render`, and commit locks/ and dockerfiles/generated/", markup=False, highlight=False)
        return 1
    return 1 if newer and args.strict else 0


def _say(line: str, details: list[str] = ()) -> None:
    out.print(line, markup=False, highlight=False)
    for detail in details:
        out.print(f"  {detail}", markup=False, highlight=False)


def _rows(m, checked: list) -> str:
    """` --row ID` for each row among the checked locks, once (a row's locks of every platform are named after it:
    locks/linux-arm64/<row>.txt), locks/tools.txt left out (every `lock` writes it)."""
    return "".join(f" --row {stem}" for stem in dict.fromkeys(c.path.stem for c in checked
                                                                if c.path != locks.tools_lock_path(m)))
