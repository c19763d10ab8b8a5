"""`build.py promote` (CI): retag tested candidates to their final tags in the registry."""

from __future__ import annotations

from pathlib import Path

from imagematrix.cli.common import err, out, registry_options, row_options
from imagematrix.model import matrix as matrix_mod
from imagematrix.stages import promote

HELP = "retag tested candidates to their final tags in the registry (CI)"


def add_arguments(p) -> None:
    row_options(p)
    registry_options(p)
    p.add_argument("--plan-json", help="the `plan --github` matrix: promote its rows (instead of --row)")
    p.add_argument("--results", type=Path, help="directory of result files <job>--<row-id>, one per passed test job")
    p.add_argument("--need", action="append", default=[], metavar="JOB",
                   help="a row is promoted only with a result from this job (repeatable; needs --results)")
    p.add_argument("--compression", choices=promote.COMPRESSIONS, default="gzip",
                   help="layers of the final tags: gzip (default: the candidate's, any docker pulls it), zstd "
                        "(recompressed with skopeo: smaller, faster to unpack; docker >= 23 / containerd >= 1.5 "
                        "pull it, docker 20.10 cannot), or both (gzip tags plus <tag>-zstd)")


def run(args) -> int:
    m = matrix_mod.load(args.matrix)
    rows = promote.rows_from_plan(m, args.plan_json) if args.plan_json is not None else m.select(args.rows)
    missing = promote.missing_results(rows, args.need, args.results)
    outcomes = promote.promote(m, rows, args.registry, out, missing, args.compression)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        err.print(f"[red]{len(failed)} of {len(outcomes)} row(s) not promoted[/]")
    return 1 if failed else 0
