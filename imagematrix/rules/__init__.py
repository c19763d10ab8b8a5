"""Compatibility rules (data: knowledge/rules.yaml): known-bad combinations checked before any build.

`evaluate(row, resolution)` returns one or more RuleResult per rule: passed, failed (severity fail: validate exits
2), warned, or not applicable, each with a message that names the symptom users see and a fix. `to_errors` turns
failures into InputErrors that point at matrix file, line, row and field; `explain` renders `validate --explain`.
One module per rule kind (conflict, flash_attn, vllm_env, verl_ranges, python_requires), the engine that
dispatches to them, the schema of the rules file and the report.
"""

from imagematrix.rules.engine import KINDS, evaluate
from imagematrix.rules.report import explain, field_line, summary, to_errors, warnings
from imagematrix.rules.schema import RuleResult, Ruleset, RuleSpec, load

__all__ = ["KINDS", "RuleResult", "RuleSpec", "Ruleset", "evaluate", "explain", "field_line", "load", "summary",
           "to_errors", "warnings"]
