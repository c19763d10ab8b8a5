"""The rules file's schema (knowledge/rules.yaml, checked with pydantic) and a rule's result."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from imagematrix.model import fields, paths, yamlio
from imagematrix.model.errors import InputError

Severity = Literal["fail", "warn"]


@dataclass(frozen=True)
class RuleResult:
    rule: str
    severity: Severity  # effective severity of this result (a fail rule can warn when its data is unverified)
    passed: bool
    message: str  # what was checked and, when it did not pass, the symptom users see
    fix: str | None = None
    field: str | None = None  # row field the result is about (tensordict, env.VLLM_USE_V1, python...)
    where: str | None = None  # "row <id>, field <field>"
    applicable: bool = True

    @property
    def status(self) -> str:
        if not self.applicable:
            return "n/a"
        if self.passed:
            return "passed"
        return "failed" if self.severity == "fail" else "warned"

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    @property
    def warned(self) -> bool:
        return self.status == "warned"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _specifier(value: str) -> str:
    try:
        SpecifierSet(value)
    except InvalidSpecifier:
        raise ValueError(f"{value!r} is not a PEP 440 version specifier (write e.g. \">=2.6\")") from None
    return value


# Row fields a rule can read a version of (rules/common.py reads them); any other name is a package.
_VERSIONED_FIELDS = {canonicalize_name(n) for n in (*fields.PIN_FIELDS, *fields.PIN_PACKAGES.values(), "python", "cuda")}


def _one_edit(a: str, b: str) -> bool:
    """a and b differ by one inserted, deleted or replaced character, or by two swapped neighbours."""
    if abs(len(a) - len(b)) > 1 or a == b:
        return False
    if len(a) == len(b):
        diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]]
                                  and a[diff[1]] == b[diff[0]])
    short, long = sorted((a, b), key=len)
    return any(long[:i] + long[i + 1:] == short for i in range(len(long)))


def _versioned_name(name: str) -> str:
    # Any package may be named, so a typo of a row field would read as an unknown package and the rule would
    # silently never apply: a name one edit away from a row field is refused (real packages are farther).
    if not fields.PACKAGE_RE.fullmatch(name):
        raise ValueError(f"{name!r} is neither a row field nor a package name")
    canon = canonicalize_name(name)
    near = next((f for f in sorted(_VERSIONED_FIELDS) if _one_edit(canon, f)), None)
    if canon not in _VERSIONED_FIELDS and near:
        raise ValueError(f"{name!r} looks like a typo of {near!r}")
    return name


def _row_key(name: str) -> str:
    if name not in fields.ROW_KEYS:
        raise ValueError(f"{name!r} is not a row key (one of {', '.join(fields.ROW_KEYS)})")
    return name


Specifier = Annotated[str, AfterValidator(_specifier)]
VersionedName = Annotated[str, AfterValidator(_versioned_name)]  # a row field or a package
RowKey = Annotated[str, AfterValidator(_row_key)]


class RuleSpec(_Strict):
    id: str
    severity: Severity
    kind: Literal["conflict", "flash-attn-wheel", "vllm-env", "verl-ranges", "python-requires",
                  "training-attention", "pin-requires"]
    field: RowKey
    symptom: str
    fix: str
    source: str
    when: dict[VersionedName, Specifier] = {}
    packages: list[VersionedName] = []
    of: list[VersionedName] = []  # pin-requires: the pins whose Requires-Dist is checked


class ValueRange(_Strict):
    vllm: Specifier
    accept: list[str]
    invalid: str
    deprecated_suffix: str | None = None


class EnvVar(_Strict):
    exists: Specifier
    missing: str
    values: list[ValueRange] = []


class VllmEnv(_Strict):
    checked: Specifier
    variables: dict[fields.EnvName, EnvVar]


class Ruleset(_Strict):
    rules: list[RuleSpec]
    vllm_env: VllmEnv


@functools.cache
def load(path: Path = paths.RULES) -> Ruleset:
    doc = yamlio.load_mapping(path, keys="`rules` and `vllm_env`")
    try:
        ruleset = Ruleset.model_validate(dict(doc))
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"] if p != "[key]")  # pydantic's marker of a bad mapping key
        line = yamlio.line_at(doc, first["loc"])
        raise InputError(f"invalid rules data at {loc}: {first['msg']}", where=f"{path}:{line}" if line else str(path),
                         fix="see the header of the file for the allowed keys") from None
    seen: set[str] = set()
    for index, rule in enumerate(ruleset.rules):
        if rule.id in seen:
            line = yamlio.line_of(doc["rules"], index)
            raise InputError(f"duplicate rule id {rule.id!r}", where=f"{path}:{line}" if line else str(path),
                             fix="give each rule its own id")
        seen.add(rule.id)
    return ruleset
