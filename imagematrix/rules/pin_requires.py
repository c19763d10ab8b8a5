"""Rule kind `pin-requires`: the row's versions of `packages` against the base Requires-Dist of the pins in `of`
(e.g. vLLM's transformers floor), read from their wheels' METADATA. Overrides do not silence it: an override forces
uv past such a requirement, and the image then fails `uv pip check` in the smoke tests (imagematrix/suites/cpu/test_image.py)."""

from __future__ import annotations

from packaging.utils import canonicalize_name

from imagematrix.knowledge import requires
from imagematrix.model.errors import RuntimeFailure
from imagematrix.model.matrix import Row
from imagematrix.rules import common, schema


def requires_dist(package: str, version: str) -> tuple[str, ...]:
    """Requires-Dist lines of package==version (knowledge.requires; a seam for tests without an index)."""
    return requires.requires_dist(package, version)


def base_requirements(package: str, version: str, python: str):
    """package==version's requirements without an extra, for `python` on linux x86_64."""
    return requires.base_requirements(requires_dist(package, version), python)


def check(spec: schema.RuleSpec, row: Row, resolution: dict | None, ruleset: schema.Ruleset) -> list[schema.RuleResult]:
    results, fine = [], []
    for owner in spec.of:
        owner_version, _ = common.version_of(row, owner, resolution)
        if owner_version is None:
            continue
        try:
            reqs = base_requirements(owner, owner_version, row.python)
        except RuntimeFailure as exc:
            return [common.result(spec, row, passed=False, severity="warn",
                                  message=f"cannot read {owner} {owner_version}'s declared requirements: {exc}",
                                  fix="check the network or the package index, then validate again")]
        for package in spec.packages:
            canon = canonicalize_name(package)
            for req in (r for r in reqs if canonicalize_name(r.name) == canon and str(r.specifier)):
                version, field = common.version_of(row, package, resolution)
                if version is None:
                    continue
                if req.specifier.contains(version, prereleases=True):
                    fine.append(f"{package} {version} in {owner} {owner_version}'s {req}")
                    continue
                forced = " (forced by the row's override)" if canon in {canonicalize_name(n) for n in row.overrides} else ""
                results.append(common.result(
                    spec, row, passed=False, field=field or package,
                    message=f"{owner} {owner_version} requires {req}, the row has {package} {version}{forced}: "
                            f"{spec.symptom}",
                    fix=f"pick {package} within {req.specifier} (or another {owner}); {spec.fix}"))
    if not results:
        results.append(common.result(spec, row, passed=True,
                                     message="; ".join(fine) or f"none of {', '.join(spec.packages)} is constrained"))
    return results
