"""Rule kind `python-requires`: the row's Python against every pin's Requires-Python."""

from __future__ import annotations

from imagematrix.knowledge import requires_python
from imagematrix.model.errors import RuntimeFailure
from imagematrix.model.matrix import Row
from imagematrix.rules import common, schema


def check(spec: schema.RuleSpec, row: Row, resolution: dict | None, ruleset: schema.Ruleset) -> list[schema.RuleResult]:
    try:
        problems = requires_python.check(row)
    except RuntimeFailure as exc:
        return [common.result(spec, row, passed=False, severity="warn",
                        message=f"cannot read Requires-Python from the index: {exc}",
                        fix="check the network or the package index, then validate again")]
    if not problems:
        pins = ", ".join(p for p in sorted(row.pins()) if p != "flash-attn")
        return [common.result(spec, row, passed=True, message=f"Python {row.python} is within Requires-Python of {pins}")]
    return [common.result(spec, row, passed=False, message=f"{p.message}: {spec.symptom}", fix=p.fix) for p in problems]
