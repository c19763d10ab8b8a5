"""Helpers every rule kind uses: a row field's or package's version, specifier tests, a result."""

from __future__ import annotations

from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion

from imagematrix.model import fields
from imagematrix.model.matrix import Row
from imagematrix.rules import schema

# Row fields a rule can name: the pins, and the row's Python and CUDA.
ROW_FIELDS = (*fields.PIN_FIELDS, "python", "cuda")


def contains(spec: str, version: str) -> bool:
    try:
        return SpecifierSet(spec).contains(version, prereleases=True)
    except InvalidVersion:
        return False


def version_of(row: Row, name: str, resolution: dict | None) -> tuple[str | None, str | None]:
    """(version, row field it comes from) for a row key or a package name; from the resolution when the row
    does not pin it (field None then)."""
    if name in ROW_FIELDS:
        return getattr(row, name), name
    canon = canonicalize_name(name)
    for field in ROW_FIELDS:
        if field in fields.PIN_PACKAGES and canonicalize_name(fields.PIN_PACKAGES[field]) == canon:
            return getattr(row, field), field
    for package, version in row.extras.items():
        if canonicalize_name(package) == canon:
            return version, f"extras.{package}"
    if resolution and canon in resolution:
        return resolution[canon].version, None
    return None, None


def result(spec: schema.RuleSpec, row: Row, *, passed: bool, message: str, field: str | None = None,
            severity: schema.Severity | None = None, fix: str | None = None, applicable: bool = True) -> schema.RuleResult:
    field = field or spec.field
    return schema.RuleResult(rule=spec.id, severity=severity or spec.severity, passed=passed, message=message,
                      fix=None if passed or not applicable else (fix or spec.fix), field=field,
                      where=f"row {row.id}, field {field}", applicable=applicable)
