"""`build.py outdated`: releases newer than the matrix covers, and the row add-row would propose for each new vLLM
(and verl) release. Exit 0: no row can be added; 1: rows can be added (a scheduled job acts on it); 2: bad input."""

from __future__ import annotations

import argparse
import json

from packaging.version import InvalidVersion, Version
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from imagematrix.assist import addrow, index_snapshot, outdated, pairing, resolutions
from imagematrix.cli.common import checked, err, matrix_option, out
from imagematrix.model import fields, secrets
from imagematrix.model import matrix as matrix_mod
from imagematrix.model.errors import InputError

SHOWN = 8  # releases listed per package in the table (--json lists all)


def _version(text: str) -> str:
    try:
        return str(Version(text))
    except InvalidVersion:
        raise argparse.ArgumentTypeError(f"{text!r} is not a version (e.g. 0.7.0)") from None


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def add_arguments(p) -> None:
    matrix_option(p)
    p.add_argument("--since-vllm", type=_version, metavar="X",
                   help="consider the vLLM releases from X on (default: those newer than the matrix's newest)")
    p.add_argument("--limit", type=_positive, metavar="N", help="only the newest N releases of each package")
    p.add_argument("--python", type=checked(fields.check_python), help="Python of the proposals (default: the matrix's)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--offline", action="store_true",
                   help="use only what an earlier run cached (the index's answers and uv's), and say how old it is")
    p.add_argument("--refresh", action="store_true", help="ask uv again instead of using its cached answers")
    p.add_argument("--jobs", type=_positive, default=4, help="releases proposed in parallel (default 4)")


def releases_table(report: outdated.Report) -> Table:
    table = Table("package", "matrix", "newer releases", title="releases newer than the matrix covers")
    for package in index_snapshot.PACKAGES:
        found = report.newer.get(package, [])
        if report.covered.get(package) is None and not found:
            listed = "[dim](no row pins it)[/]"
        elif not found:
            listed = "[green]none[/]"
        else:
            names = [r.version + ("" if r.wheel else " (sdist)") for r in found[:SHOWN]]
            listed = escape(", ".join(names) + (f", … {len(found) - SHOWN} more" if len(found) > SHOWN else ""))
        table.add_row(package, report.covered.get(package) or "-", listed)
    return table


# A note's line longer than this is shortened at a word boundary (--json has every text whole); the table wraps
# the rest at spaces.
NOTE_WIDTH = 200
CHECKED_WIDTH = 400  # what was checked: every rule named, as a rule is rarely named twice


def _checked(found: dict) -> str:
    """What a nearest pairing's check says: offered and what was checked, or why it is not offered."""
    words = found.get("words")
    if not words:
        return ""
    return " — " + ("" if found.get("offered") is False else "offered; ") + pairing.shorten(words, CHECKED_WIDTH)


def _nearest(o: outdated.Outcome) -> list[str]:
    lines = []
    by_vllm, by_verl = o.nearest.get("vllm"), o.nearest.get("verl")
    if by_vllm:
        lines.append(f"→ verl {by_vllm['verl']}: newest vLLM that resolves {by_vllm['vllm']}"
                     + (" (override)" if by_vllm["override"] else "") + _checked(by_vllm))
    elif "vllm" in o.nearest:
        lines.append("→ no vLLM resolves with the newest verl")
    if by_verl:
        lines.append(f"→ vLLM {o.version if o.package == 'vllm' else by_verl['vllm']}: newest verl that resolves "
                     f"{by_verl['verl']}" + (" (override)" if by_verl["override"] else "") + _checked(by_verl))
    elif "verl" in o.nearest:
        lines.append("→ no verl release resolves with it")
    return lines


def _note(o: outdated.Outcome) -> Text:
    """One table cell: what to do with the release and what was checked, or why no row (or why the proposal is not
    offered) and the nearest pairings that resolve. Each line is shortened at a word boundary, never inside a word.
    Plain text with a styled lead, never markup: uv's and the index's words are shown as they are."""
    if o.in_matrix:
        return Text("in the matrix", style="dim")
    if o.proposal is None:
        lines = [pairing.shorten(o.reason or "", NOTE_WIDTH)]
        if o.tried:
            label, cause = o.tried[0]
            more = f" (+{len(o.tried) - 1} more tried)" if len(o.tried) > 1 else ""
            lines.append(pairing.shorten(f"{label}: {cause}", NOTE_WIDTH - len(more)) + more)
        lines += _nearest(o)
        return Text.assemble(("no row", "yellow"), ": " + "\n".join(lines))
    notes = [f"override: {reason.split(';')[0]}" for reason in o.proposal.overrides.values()]
    notes += [f"extras: {name} {version}" for name, version in o.proposal.extras.items()]
    checked = pairing.shorten(o.vetting.words(), CHECKED_WIDTH) if o.vetting else "not offered: not checked"
    if not o.offered:
        return Text.assemble(("not offered", "yellow"), ": " + "\n".join([checked.removeprefix("not offered: "), *notes]))
    return Text.assemble(("can be added", "green"), (": " + "; ".join(notes)) if notes else "", "\n" + checked)


COLUMNS = tuple(k for k in addrow.ROW_ORDER if k not in ("flash_attn", "python"))  # add-row proposes neither


def rows_table(report: outdated.Report) -> Table:
    table = Table("release", "date", *COLUMNS, title=f"what add-row would propose (Python {report.python})")
    table.add_column("note", overflow="fold")  # wrapped at spaces; a word wider than the column folds, never "…"
    for o in report.outcomes:
        pins = o.proposal.pins if o.proposal else {}
        table.add_row(f"{o.package} {o.version}", (o.uploaded or "")[:10], *(pins.get(k, "") for k in COLUMNS),
                      _note(o))
    return table


def summary(report: outdated.Report) -> str:
    if report.addable:
        commands = ", ".join(f"--vllm {o.proposal.pins['vllm']}"
                             + (f" --verl {o.proposal.pins['verl']}" if o.package == "verl" else "")
                             for o in report.addable)
        return f"{len(report.addable)} row(s) can be added: build.py add-row {commands}"
    if any(report.newer.values()):
        return "no row can be added yet (see the reasons above)"
    return "the matrix is current"


def render_json(report: outdated.Report) -> str:
    return json.dumps(report.to_json(), indent=2)


def run(args) -> int:
    m = matrix_mod.load(args.matrix)
    python = args.python or addrow.matrix_defaults(m).get("python")
    if not python:
        raise InputError("no Python version: the matrix has no default", fix="pass --python, e.g. --python 3.11")
    now = index_snapshot.utcnow()
    if args.offline:
        snapshot = index_snapshot.load()
        if snapshot is None:
            raise InputError(f"no cached index answers in {index_snapshot.cache_path()}",
                             where="outdated --offline",
                             fix="run `python build.py outdated` once with the network (it caches what it reads)")
    else:
        with err.status("reading the index (verl, vllm, torch, transformers, tensordict, flash-attn)"):
            snapshot = index_snapshot.fetch(now)
        index_snapshot.save(snapshot)
    resolver = resolutions.Resolver(offline=args.offline, max_age_s=0 if args.refresh else resolutions.DEFAULT_MAX_AGE_S)
    with err.status("proposing rows (uv; answers cached by their inputs)"):
        report = outdated.build_report(m.rows, snapshot, resolver, python=python, now=now, offline=args.offline,
                                       since_vllm=args.since_vllm, limit=args.limit, jobs=args.jobs)
    if not args.offline:
        index_snapshot.save(snapshot)  # again: with the facts the rules read that it lacked (an --offline run's)
    if args.json:
        print(secrets.redact_text(render_json(report)))
    else:
        out.print(releases_table(report))
        if report.outcomes:
            out.print(rows_table(report))
        out.print(summary(report), markup=False, soft_wrap=True)
    for note in snapshot.notes:
        err.print(f"note: {secrets.redact_text(note)}", markup=False, soft_wrap=True)
    err.print(index_snapshot.cache_note(snapshot, now, args.offline) +
              f"; uv: {report.asked} resolution(s), {report.from_cache} answer(s) from the cache",
              markup=False, soft_wrap=True)
    return report.exit_code
