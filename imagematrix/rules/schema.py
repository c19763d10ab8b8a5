"""The rules file's schema (knowledge/rules.yaml, checked with pydantic) and a rule's result."""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from pydantic import BaseModel, ConfigDict, ValidationError

from imagematrix.model import paths, yamlio
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


class RuleSpec(_Strict):
    id: str
    severity: Severity
    kind: Literal["conflict", "flash-attn-wheel", "vllm-env", "verl-ranges", "python-requires",
                  "training-attention"]
    field: str
    symptom: str
    fix: str
    source: str
    when: dict[str, str] = {}
    packages: list[str] = []


class WheelAxes(_Strict):
    cuda: list[str] = []
    torch: list[str] = []
    python: list[str] = []
    abi: list[bool] = []


class WheelSingle(_Strict):
    cuda: str
    torch: str
    python: str
    abi: bool


class WheelRelease(_Strict):
    versions: list[str]
    evidence: Literal["verified", "assumed"]
    source: str
    matrix: WheelAxes
    exclude: list[WheelAxes] = []
    extra: list[WheelSingle] = []

    def wheels(self) -> set[tuple[str, str, str, bool]]:
        """Every (CUDA major, torch major.minor, Python, cxx11 ABI) with a prebuilt wheel."""
        m = self.matrix
        out = set(itertools.product(m.cuda, m.torch, m.python, m.abi))
        for ex in self.exclude:
            out = {w for w in out if not all(
                not axis or value in axis
                for axis, value in zip((ex.cuda, ex.torch, ex.python, ex.abi), w, strict=True))}
        out |= {(e.cuda, e.torch, e.python, e.abi) for e in self.extra}
        return out


class ValueRange(_Strict):
    vllm: str
    accept: list[str]
    invalid: str
    deprecated_suffix: str | None = None


class EnvVar(_Strict):
    exists: str
    missing: str
    values: list[ValueRange] = []


class VllmEnv(_Strict):
    checked: str
    variables: dict[str, EnvVar]


class Ruleset(_Strict):
    rules: list[RuleSpec]
    flash_attn_wheels: list[WheelRelease]
    vllm_env: VllmEnv


@functools.cache
def load(path: Path = paths.RULES) -> Ruleset:
    doc = yamlio.load(path)
    if not isinstance(doc, dict):
        raise InputError("expected a mapping with `rules`, `flash_attn_wheels` and `vllm_env`", where=str(path))
    try:
        ruleset = Ruleset.model_validate(dict(doc))
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        node: Any = doc
        line = None
        for part in first["loc"]:
            try:
                line = yamlio.line_of(node, part)
                node = node[part]
            except (KeyError, IndexError, TypeError):
                break
        raise InputError(f"invalid rules data at {loc}: {first['msg']}", where=f"{path}:{line}" if line else str(path),
                         fix="see the header of the file for the allowed keys") from None
    ids = [r.id for r in ruleset.rules]
    if len(set(ids)) != len(ids):
        raise InputError("duplicate rule ids", where=str(path))
    for spec in _all_specifiers(ruleset):
        try:
            SpecifierSet(spec)
        except InvalidSpecifier:
            raise InputError(f"invalid version specifier {spec!r}", where=str(path)) from None
    return ruleset


def _all_specifiers(ruleset: Ruleset) -> list[str]:
    out = [s for r in ruleset.rules for s in r.when.values()]
    out.append(ruleset.vllm_env.checked)
    for var in ruleset.vllm_env.variables.values():
        out.append(var.exists)
        out += [v.vllm for v in var.values]
    return out
