"""`build.py gpu-record`: turn a GPU run's raw results (imagematrix/suites/gpu/run_host.sh's OUT) into a record."""

from __future__ import annotations

import datetime
from pathlib import Path

from imagematrix.cli.common import matrix_option, out
from imagematrix.model import gpurun
from imagematrix.model import matrix as matrix_mod
from imagematrix.model.errors import InputError
from imagematrix.stages import gpu_record, locks


def add_arguments(p) -> None:
    matrix_option(p)
    p.add_argument("results", type=Path, help="the OUT folder of imagematrix/suites/gpu/run_host.sh")
    p.add_argument("--row", required=True, dest="row_id", metavar="ID", help="the row whose wheels the run used")
    p.add_argument("--mode", choices=("host", "image"), default="host", help="host mode or inside the image")
    p.add_argument("--date", default=None, help="YYYY-MM-DD of the run (default: today, UTC)")
    p.add_argument("--note", default="", help="what the record should say beside the numbers (one line)")


def run(args) -> int:
    if args.date is not None:  # it names the record's file: checked before anything is read or written
        try:
            gpurun.check_date(args.date)
        except ValueError as exc:
            raise InputError(f"--date {exc}", fix="give the run's day as YYYY-MM-DD, e.g. --date 2026-12-02 "
                                                  "(or leave --date out: today, UTC)") from None
    try:
        gpurun.check_line(args.note)
        if len(args.note) > gpurun.NOTE_MAX:
            raise ValueError(f"is {len(args.note):,} characters long, over {gpurun.NOTE_MAX:,}")
    except ValueError as exc:
        raise InputError(f"--note {exc}", fix="pass the note as one line of text (no newlines, tabs or escapes)") \
            from None
    m = matrix_mod.load(args.matrix)
    if not args.results.is_dir():
        raise InputError(f"{args.results}: no such folder", fix="pass the OUT folder of imagematrix/suites/gpu/run_host.sh")
    row = m.select([args.row_id])[0]
    date = args.date or datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    # everything this command reads is read and checked before it writes: the records beside the new one (the row's
    # summary below lists them), the raw results, the lock
    folder = gpurun.RUNS
    known = gpurun.load_named(folder)
    record = gpu_record.record(m, row, args.results, date, args.mode, args.note)
    pins = locks.current_pins(m, row)
    path = gpu_record.write(record, folder)
    named = sorted([*known, (path.name, record)], key=lambda pair: (pair[1].date, pair[0]))
    row_runs = [run for _, run in named if run.row == row.id]
    shown = path.relative_to(m.root) if path.is_relative_to(m.root) else path
    out.print(f"wrote {shown} ({record.counts()}); row {row.id}: {gpurun.summary(row_runs, pins)}")
    return 0
