"""Rule results as users read them: InputErrors pointing at file, line, row and field; warnings; the
summary cell of `validate`; the listing of `validate --explain`."""

from __future__ import annotations

from pathlib import Path

from imagematrix.model import yamlio
from imagematrix.model.errors import InputError
from imagematrix.model.matrix import Row
from imagematrix.rules import schema


def field_line(matrix_path: Path | str, row: Row, field: str | None) -> int | None:
    """Line of `field` in the row's mapping in the matrix file (or of the default it inherits), else the row's."""
    if not field:
        return row.line
    try:
        doc = yamlio.load(Path(matrix_path))
    except InputError:
        return row.line
    rows = doc.get("rows") if isinstance(doc, dict) else None
    raw = None
    if isinstance(rows, list):
        for index, item in enumerate(rows):
            if yamlio.line_of(rows, index) == row.line:
                raw = item
                break
    top, _, sub = field.partition(".")
    for node in (raw, doc.get("defaults") if isinstance(doc, dict) else None):
        if isinstance(node, dict) and top in node:
            value = node[top]
            if sub and isinstance(value, dict) and sub in value:
                return yamlio.line_of(value, sub)
            return yamlio.line_of(node, top)
    return row.line


def to_errors(row: Row, results: list[schema.RuleResult], matrix_path: Path | str | None = None) -> list[InputError]:
    """Failed results as InputErrors: where = matrix file:line, row id, field; fix = the rule's fix."""
    errors = []
    for result in results:
        if not result.failed:
            continue
        place = f"row {row.id}, field {result.field}"
        if matrix_path is not None:
            line = field_line(matrix_path, row, result.field)
            place = f"{matrix_path}:{line}, {place}" if line else f"{matrix_path}, {place}"
        errors.append(InputError(f"({result.rule}) {result.message}", where=place, fix=result.fix))
    return errors


def warnings(row: Row, results: list[schema.RuleResult]) -> list[str]:
    """Warned results as one line each: 'row <id>, field <f>: (<rule>) <message>; fix: <fix>'."""
    return [f"row {row.id}, field {r.field}: ({r.rule}) {r.message}" + (f"; fix: {r.fix}" if r.fix else "")
            for r in results if r.warned]


def summary(results: list[schema.RuleResult]) -> str:
    """'5 passed, 1 n/a' / '1 failed, 4 passed, 1 n/a': counts by status, worst first."""
    counts = {s: sum(1 for r in results if r.status == s) for s in ("failed", "warned", "passed", "n/a")}
    return ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no rules"


def explain(rows: list[tuple[Row, list[schema.RuleResult]]]) -> str:
    """The `validate --explain` listing: per row, every rule with passed / warned / failed / n/a and why.

    Plain text (print it without markup: messages may contain brackets)."""
    lines = []
    for row, results in rows:
        lines.append(f"{row.id}: {summary(results)}")
        for r in results:
            lines.append(f"  {r.status:<7} {r.rule:<26} {r.message}")
            if r.fix and r.status in ("failed", "warned"):
                lines.append(f"  {'':<7} {'':<26} fix: {r.fix}")
    return "\n".join(lines)
