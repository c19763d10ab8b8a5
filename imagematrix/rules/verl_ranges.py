"""Rule kind `verl-ranges`: the row's pins against verl's declared Requires-Dist, unless overridden."""

from __future__ import annotations

from packaging.utils import canonicalize_name
from packaging.version import Version

from imagematrix.knowledge import verl
from imagematrix.model.errors import RuntimeFailure
from imagematrix.model.matrix import Row
from imagematrix.rules import common, schema


def check(spec: schema.RuleSpec, row: Row, resolution: dict | None, ruleset: schema.Ruleset) -> list[schema.RuleResult]:
    try:
        declared = verl.declared(row.verl, row.python)
    except RuntimeFailure as exc:
        return [common.result(spec, row, passed=False, severity="warn",
                        message=f"cannot read verl {row.verl}'s declared requirements: {exc}",
                        fix="check the network or the package index, then validate again")]
    overrides = {canonicalize_name(n): o for n, o in row.overrides.items()}
    missing_core: list[str] = []
    if "vllm" in overrides:
        # the same metadata `declared` read above (cached): it cannot fail here once that succeeded
        missing_core = sorted(set(verl.vllm_extra_includes(row.verl)) - set(row.verl_extras))
        # The image installs verl without its [vllm] extra: that extra's pins no longer apply, except to the
        # overridden packages themselves, which the report shows as left on purpose.
        # The extras the row names in verl_extras (verl-core) are installed, so their requirements still apply.
        kept = {"", *row.verl_extras}
        declared = [(r, e) for r, e in declared if e in kept or canonicalize_name(r.name) in overrides]
    results, fine, unknown = [], [], []
    if missing_core:
        # measured on an H200: verl 0.9.1 installed without [vllm] and without verl-core has no TransferQueue, and
        # its trainer stops at start with "No module named 'transfer_queue'" (docs/gpu-runs.md)
        results.append(common.result(
            spec, row, passed=False, field="verl_extras",
            message=f"the row overrides vllm, so verl {row.verl} is installed without its [vllm] extra, which also "
                    f"installs verl[{','.join(missing_core)}]: the image would lack those dependencies (verl 0.9's "
                    f"trainer imports TransferQueue from verl-core)",
            fix=f"add `verl_extras: [{', '.join(missing_core)}]` to the row"))
    for package in spec.packages:
        canon = canonicalize_name(package)
        reqs = [(r, e) for r, e in declared if canonicalize_name(r.name) == canon and str(r.specifier)]
        if not reqs:
            continue
        version, field = common.version_of(row, package, resolution)
        if version is None:
            unknown.append(package)
            continue
        bad = [(r, e) for r, e in reqs if not r.specifier.contains(version, prereleases=True)]
        shown: dict[str, str] = {}
        for r, e in bad or reqs:
            shown.setdefault(f"{r.name}{r.specifier}", e)
        declared_text = " and ".join(text + (f" (its {e} extra)" if e else "") for text, e in shown.items())
        if not bad:
            fine.append(f"{package} {version} in {declared_text}")
        elif canon in overrides:
            fine.append(f"{package} {version} leaves {declared_text} on purpose (override: {overrides[canon].reason})")
        else:
            where_from = "" if field else " (resolved)"
            post = " (a post-release sorts after the release it follows)" if Version(version).is_postrelease else ""
            results.append(common.result(
                spec, row, passed=False, field=field or "verl",
                message=f"verl {row.verl} declares {declared_text}, the row has {package} {version}{where_from}{post}: "
                        f"{spec.symptom}",
                fix=f"pick {package} within {', '.join(str(r.specifier) for r, _ in bad)}, another verl, or add "
                    f"overrides: {{{package}: {{version: \"{version}\", reason: ...}}}} when the pairing is deliberate"))
    if fine or not results:
        extra = f"; no version for {', '.join(unknown)} without a resolution" if unknown else ""
        message = ("; ".join(fine) or "none of " + ", ".join(spec.packages) + " is constrained") + extra
        results.insert(0, common.result(spec, row, passed=True, message=f"verl {row.verl}: {message}"))
    return results
