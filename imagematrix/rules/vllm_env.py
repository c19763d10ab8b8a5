"""Rule kind `vllm-env`: the row's environment (defaults, then its own `env`) against vLLM's knobs per version."""

from __future__ import annotations

from imagematrix.knowledge import envdefaults
from imagematrix.model.matrix import Row
from imagematrix.rules import common, schema


def check(spec: schema.RuleSpec, row: Row, resolution: dict | None, ruleset: schema.Ruleset) -> list[schema.RuleResult]:
    data = ruleset.vllm_env
    if not common.contains(data.checked, row.vllm):
        return [common.result(spec, row, passed=True, applicable=False,
                        message=f"no knob data for vLLM {row.vllm} (covered: {data.checked})")]
    env = envdefaults.row_environment(row)
    known = {name: env[name] for name in data.variables if name in env}
    if not known:
        return [common.result(spec, row, passed=True, applicable=False,
                        message=f"sets none of {', '.join(data.variables)}")]
    results, fine = [], []
    for name, (value, origin) in known.items():
        var = data.variables[name]
        field = f"env.{name}" if origin == "env" else "vllm"
        source = "" if origin == "env" else f" (default from {origin})"
        if not common.contains(var.exists, row.vllm):
            results.append(common.result(spec, row, passed=False, field=field,
                                   message=f"{name}={value}{source} does not exist in vLLM {row.vllm} "
                                           f"(read by {var.exists}): {var.missing}"))
            continue
        band = next((v for v in var.values if common.contains(v.vllm, row.vllm)), None)
        if band is None or value in band.accept:
            fine.append(f"{name}={value}")
            continue
        suffix = band.deprecated_suffix
        if suffix and value.endswith(suffix) and value[: -len(suffix)] in band.accept:
            results.append(common.result(spec, row, passed=False, severity="warn", field=field,
                                   message=f"{name}={value}{source}: vLLM {row.vllm} strips the deprecated "
                                           f"{suffix} suffix with a warning",
                                   fix=f"write {name}={value[: -len(suffix)]}"))
            continue
        results.append(common.result(spec, row, passed=False, field=field,
                               message=f"{name}={value}{source} is not valid for vLLM {row.vllm} "
                                       f"(valid: {', '.join(band.accept)}): {band.invalid.replace('<value>', value)}"))
    if fine:
        results.insert(0, common.result(spec, row, passed=True, message=f"valid for vLLM {row.vllm}: {', '.join(fine)}"))
    return results
