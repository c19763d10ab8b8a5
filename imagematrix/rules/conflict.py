"""Rule kind `conflict`: every field in `when` falls in its PEP 440 specifier -> the known-bad combination."""

from __future__ import annotations

from imagematrix.model.matrix import Row
from imagematrix.rules import common, schema


def check(spec: schema.RuleSpec, row: Row, resolution: dict | None, ruleset: schema.Ruleset) -> list[schema.RuleResult]:
    seen = []
    for name, specifier in spec.when.items():
        version, _ = common.version_of(row, name, resolution)
        if version is None:
            hint = "" if resolution is not None else " (and no resolution to read it from)"
            return [common.result(spec, row, passed=True, applicable=False, message=f"the row has no {name} version{hint}")]
        if not common.contains(specifier, version):
            return [common.result(spec, row, passed=True, message=f"{name} {version} is outside {specifier}")]
        seen.append(f"{name} {version}")
    return [common.result(spec, row, passed=False, message=f"{' with '.join(seen)}: {spec.symptom}")]
