"""Rule kind `training-attention`: a row whose verl hard-codes flash_attention_2 ships flash-attn, or declares
itself rollout-only with a reason (knowledge/training.yaml says which verl versions hard-code it)."""

from __future__ import annotations

from imagematrix.knowledge import training
from imagematrix.model.matrix import Row
from imagematrix.rules import common, schema


def check(spec: schema.RuleSpec, row: Row, resolution: dict | None, ruleset: schema.Ruleset) -> list[schema.RuleResult]:
    how = training.attention(row)
    if training.band(row.verl) is None and not row.flash_attn:
        return [common.result(spec, row, passed=True, applicable=False, message=how.note)]
    if how.needs_flash_attn and not row.flash_attn and not row.rollout_only:
        return [common.result(spec, row, passed=False, message=f"verl {row.verl} without flash-attn: {spec.symptom}")]
    return [common.result(spec, row, passed=True, message=how.note)]
