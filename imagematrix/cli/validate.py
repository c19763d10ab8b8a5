"""`build.py validate`: check rows (schema, resolution, rules, patches, CUDA, locks); writes nothing."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from imagematrix import rules
from imagematrix.cli.common import err, load, out, row_options
from imagematrix.model import paths
from imagematrix.model.errors import InputErrors, RuntimeFailure
from imagematrix.stages import validate


def add_arguments(p) -> None:
    row_options(p)
    p.add_argument("--jobs", type=int, default=4, help="rows resolved in parallel (default 4)")
    p.add_argument("--explain", action="store_true",
                   help="list, per row, each compatibility rule (knowledge/rules.yaml): passed, warned, failed or "
                        "not applicable, and why")
    p.add_argument("--patches", type=Path, default=paths.PATCHES, help=argparse.SUPPRESS)


def _rules_cell(checks) -> str:
    text = escape(rules.summary(checks))
    if any(c.failed for c in checks):
        return f"[red]{text}[/]"
    return f"[yellow]{text}[/]" if any(c.warned for c in checks) else text


def run(args) -> int:
    m, rows = load(args)
    started = time.monotonic()
    with err.status(f"resolving {len(rows)} row(s) with uv"):
        report = validate.validate(m, rows, args.patches, args.jobs)
    table = Table("row", "resolution", "torch CUDA", "lock", "patches", "rules", title=f"{m.path}")
    for entry in report.rows:
        patch_text = "[red]invalid[/]" if entry.patches == "invalid" else entry.patches
        if entry.resolution != "ok":
            table.add_row(entry.row.id, f"[red]{entry.resolution}[/]", "", "", patch_text, _rules_cell(entry.checks))
            continue
        cuda = str(entry.torch_cuda) if entry.cuda_ok else f"[red]{entry.torch_cuda}[/]"
        lock = entry.lock if entry.lock == "ok" else f"[red]{entry.lock}[/]"
        for platform, status in entry.platforms.items():  # linux/arm64: its own lock (or why it did not resolve)
            lock += f"\n{platform.removeprefix('linux/')}: " + (status if status == "ok" else f"[red]{status}[/]")
        table.add_row(entry.row.id, f"ok, {entry.packages} packages", cuda, lock, patch_text, _rules_cell(entry.checks))
    out.print(table)
    if args.explain:
        out.print(rules.explain([(e.row, e.checks) for e in report.rows]), markup=False, highlight=False,
                  soft_wrap=True)
    for line in report.warnings:
        err.print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)
    out.print(f"validated {len(rows)} row(s) in {time.monotonic() - started:.1f} s")
    if report.errors:
        raise InputErrors(report.errors)
    if report.failures:
        raise RuntimeFailure("\n".join(report.failures))
    return 0
