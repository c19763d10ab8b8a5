"""The rule engine: every rule of knowledge/rules.yaml against a row, through the check of its kind.

A kind is a module of this package with `check(spec, row, resolution, ruleset) -> list[RuleResult]`, listed in
KINDS; a new kind is one module, one entry here and its documentation in the header of knowledge/rules.yaml.
"""

from __future__ import annotations

from imagematrix.model.matrix import Row
from imagematrix.rules import (
    conflict,
    flash_attn,
    pin_requires,
    python_requires,
    schema,
    training_attention,
    verl_ranges,
    vllm_env,
)

KINDS = {"conflict": conflict.check, "flash-attn-wheel": flash_attn.check, "vllm-env": vllm_env.check,
         "verl-ranges": verl_ranges.check, "python-requires": python_requires.check,
         "training-attention": training_attention.check, "pin-requires": pin_requires.check}


def evaluate(row: Row, resolution: dict | None = None, *, ruleset: schema.Ruleset | None = None,
             skip: tuple[str, ...] = ()) -> list[schema.RuleResult]:
    """Every rule against the row. `resolution`: lockfile.parse(...) entries when validate has them (for packages
    the row does not pin, e.g. ray). `skip`: rule ids to leave out."""
    ruleset = ruleset or schema.load()
    out: list[schema.RuleResult] = []
    for spec in ruleset.rules:
        if spec.id in skip:
            continue
        out.extend(KINDS[spec.kind](spec, row, resolution, ruleset))
    return out
