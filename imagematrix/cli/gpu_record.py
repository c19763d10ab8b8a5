"""`build.py gpu-record`: turn a GPU run's raw results (tests/smoke/gpu/run_host.sh's OUT) into a record."""

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
    p.add_argument("results", type=Path, help="the OUT folder of tests/smoke/gpu/run_host.sh")
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
    m = matrix_mod.load(args.matrix)
    if not args.results.is_dir():
        raise InputError(f"{args.results}: no such folder", fix="pass the OUT folder of tests/smoke/gpu/run_host.sh")
    row = m.select([args.row_id])[0]
    date = args.date or datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    record = gpu_record.record(m, row, args.results, date, args.mode, args.note)
    path = gpu_record.write(record)
    row_runs = gpurun.by_row(gpurun.load_all(path.parent)).get(row.id, [])
    out.print(f"wrote {path.relative_to(m.root)} ({record.counts()}); row {row.id}: {gpurun.summary(row_runs, locks.current_pins(m, row))}")
    return 0
