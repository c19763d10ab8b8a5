"""`build.py add-row`: propose the pins for a vLLM version, append the row, lock and render it."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from imagematrix.assist import addrow
from imagematrix.cli.common import checked, err, matrix_option, out
from imagematrix.model import fields
from imagematrix.model import matrix as matrix_mod
from imagematrix.model.errors import InputError


def add_arguments(p) -> None:
    matrix_option(p)
    p.add_argument("--vllm", required=True, type=checked(fields.check_exact_version), help="the vLLM version of the new row")
    p.add_argument("--verl", type=checked(fields.check_exact_version),
                   help="verl version (default: the newest whose [vllm] extra admits this vLLM)")
    p.add_argument("--python", type=checked(fields.check_python), help="Python version (default: the matrix's default)")
    p.add_argument("--dry-run", action="store_true", help="show the proposed row and write nothing")


def run(args) -> int:
    m = matrix_mod.load(args.matrix)
    python = args.python or addrow.matrix_defaults(m).get("python")
    if not python:
        raise InputError("no Python version: the matrix has no default", fix="pass --python, e.g. --python 3.11")
    with err.status(f"proposing pins for vLLM {args.vllm} (uv, PyPI metadata)"):
        proposal = addrow.propose(args.vllm, python, args.verl)
    table = Table("pin", "version", "why", title=f"proposed row for vLLM {args.vllm}")
    for key in addrow.ROW_ORDER:
        if key in proposal.pins:
            table.add_row(key, proposal.pins[key], escape(proposal.why.get(key, "")))
    for name, version in proposal.extras.items():
        table.add_row(f"extras.{name}", version, escape(proposal.why.get("extras", "")))
    for name, reason in proposal.overrides.items():
        table.add_row(f"overrides.{name}", proposal.pins[name], escape(reason))
    out.print(table)
    row, snippet, text = addrow.prepare(m, proposal, args.vllm)
    if args.dry_run:
        out.print(snippet, end="", markup=False, soft_wrap=True)  # the YAML as written, brackets and long lines kept
        out.print(f"(dry run: nothing written; the row id would be {row.id})")
        return 0
    with err.status(f"locking {row.id}"):
        lock = addrow.apply(m, row, text)
    out.print(f"added {row.id} to {m.path.name}, wrote {lock.relative_to(m.root)} and "
              f"dockerfiles/generated/{row.id}/; review them, then `python build.py build --row {row.id}`")
    return 0
