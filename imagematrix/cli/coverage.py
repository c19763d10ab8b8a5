"""`build.py coverage --row ID [--image REF] [--from registry|daemon] [--record]`: which GPUs the row's image runs
on, read from its binaries (stages/coverage_row), compared with coverage/<row-id>.json and the GPUs the row
declares (gpus, gpus_jit): exit 1 when it lost a kernel or misses a declared GPU."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from imagematrix.cli.common import checked, err, matrix_option, out
from imagematrix.model import fields, tags
from imagematrix.model import matrix as matrix_mod
from imagematrix.stages import coverage_row


def add_arguments(p) -> None:
    matrix_option(p)
    p.add_argument("--row", required=True, metavar="ID", help="the row whose image this is")
    p.add_argument("--image", metavar="REF", help="the image (default: REGISTRY/verl:<row-id>)")
    p.add_argument("--registry", default=tags.DEFAULT_REGISTRY, type=checked(fields.check_registry),
                   help=f"host[:port]/namespace of the default image (default: {tags.DEFAULT_REGISTRY})")
    p.add_argument("--from", dest="source", choices=("registry", "daemon"), default="registry",
                   help="read the image's layers from the registry (default) or the local Docker daemon")
    p.add_argument("--record", action="store_true",
                   help="write coverage/<row-id>.json from this scan, also when it lost kernels (an intended change)")


def run(args) -> int:
    m = matrix_mod.load(args.matrix)
    row = m.select([args.row])[0]
    image = args.image or f"{tags.repository(args.registry)}:{row.id}"
    outcome = coverage_row.check_image(row, image, m.root,
                                       daemon=args.source == "daemon", record=args.record)
    base = outcome.baseline
    table = Table("GPU", "verdict", "not deciding, no kernel", title=f"{row.id}: device code per GPU")
    names = dict(coverage_row.capabilities())
    for cap, verdict in base.verdicts.items():
        major, minor = map(int, cap.split("."))
        v = coverage_row.GpuVerdict((major, minor), verdict["verdict"], tuple(verdict["lacking"]),
                                    tuple(verdict["jit"]), tuple(verdict["optional_lacking"]))
        table.add_row(f"sm_{major}{minor} ({escape(names.get((major, minor), ''))})", escape(v.summary()),
                      escape(", ".join(v.optional_lacking)))
    out.print(table)
    driver = base.driver
    out.print(f"driver: >= {driver['minimum']} (CUDA {driver['runtime_cuda']} runtime, minor-version compatibility); "
              f"full support, PTX JIT included: "
              + (f">= {driver['full']}" if driver["full"] else f"CUDA {driver['libraries_cuda']}'s driver (not in "
                                                               "knowledge/gpus.yaml)")
              + f"; libraries up to CUDA {driver['libraries_cuda']}", highlight=False, soft_wrap=True)
    if base.unread:
        err.print(f"[yellow]{len(base.unread)} file(s) not read[/]: "
                  + escape("; ".join(f"{p}: {w}" for p, w in list(base.unread.items())[:5])), soft_wrap=True)
    check = outcome.check
    colour = {"fail": "red", "pass": "green", "record": "yellow"}[check.action]
    (err if check.action == "fail" else out).print(f"[{colour}]{check.action}[/]: {escape(check.message)}",
                                                   soft_wrap=True)
    if outcome.written:
        out.print(f"wrote {outcome.written}", highlight=False)
    missing = coverage_row.declared(row, base)
    if missing:
        err.print(f"[red]fail[/]: {escape(coverage_row.declared_failure(row, missing))}", soft_wrap=True)
    elif row.gpus or row.gpus_jit:
        out.print(f"declared GPUs covered: {', '.join(row.gpus) or '-'} natively; {', '.join(row.gpus_jit) or '-'} "
                  "at least through PTX JIT", highlight=False, soft_wrap=True)
    return 1 if check.action == "fail" or missing else 0
