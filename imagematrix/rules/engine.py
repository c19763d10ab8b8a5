"""Compatibility rules (data: knowledge/rules.yaml): known-bad combinations checked before any build.

`evaluate(row, resolution)` returns one or more RuleResult per rule: passed, failed (severity fail: validate exits
2), warned, or not applicable, each with a message that names the symptom users see and a fix. `to_errors` turns
failures into InputErrors that point at matrix file, line, row and field; `explain` renders the listing of
`validate --explain`.

Kinds of rules (see the header of rules.yaml): conflict (version specifiers over row fields), flash-attn-wheel
(prebuilt wheel table), vllm-env (vLLM environment knobs per version, row env and env defaults), verl-ranges
(verl's declared Requires-Dist, read from its wheel METADATA by HTTP range and cached), python-requires
(resolve.check_python).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any, Literal

from packaging.markers import UndefinedEnvironmentName
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ConfigDict, ValidationError

from imagematrix.knowledge import envdefaults, flashattn
from imagematrix.model import paths, yamlio
from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.model.matrix import Row
from imagematrix.stages import resolve
from imagematrix.tools import pypi

RULES = paths.RULES
ROW_FIELDS = ("verl", "vllm", "torch", "tensordict", "transformers", "flash_attn", "python", "cuda")

Severity = Literal["fail", "warn"]


# --- results ------------------------------------------------------------------------------------------------


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


# --- data -----------------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuleSpec(_Strict):
    id: str
    severity: Severity
    kind: Literal["conflict", "flash-attn-wheel", "vllm-env", "verl-ranges", "python-requires"]
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
def load(path: Path = RULES) -> Ruleset:
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


@functools.cache
def _env_defaults() -> tuple[envdefaults.EnvDefault, ...]:
    return tuple(envdefaults.load())


@functools.cache
def _env_default_lines() -> dict[tuple[str, str], int | None]:
    doc = yamlio.load(paths.ENV_DEFAULTS)
    items = doc.get("env") or []
    return {(str(item.get("name")), str(item.get("vllm"))): yamlio.line_of(items, i) for i, item in enumerate(items)}


# --- helpers --------------------------------------------------------------------------------------------------


def _contains(spec: str, version: str) -> bool:
    try:
        return SpecifierSet(spec).contains(version, prereleases=True)
    except InvalidVersion:
        return False


def _version_of(row: Row, name: str, resolution: dict | None) -> tuple[str | None, str | None]:
    """(version, row field it comes from) for a row key or a package name; from the resolution when the row
    does not pin it (field None then)."""
    if name in ROW_FIELDS:
        return getattr(row, name), name
    canon = canonicalize_name(name)
    for field in ROW_FIELDS:
        package = {"flash_attn": "flash-attn"}.get(field, field)
        if canonicalize_name(package) == canon and field not in ("python", "cuda"):
            return getattr(row, field), field
    for package, version in row.extras.items():
        if canonicalize_name(package) == canon:
            return version, f"extras.{package}"
    if resolution and canon in resolution:
        return resolution[canon].version, None
    return None, None


def _result(spec: RuleSpec, row: Row, *, passed: bool, message: str, field: str | None = None,
            severity: Severity | None = None, fix: str | None = None, applicable: bool = True) -> RuleResult:
    field = field or spec.field
    return RuleResult(rule=spec.id, severity=severity or spec.severity, passed=passed, message=message,
                      fix=None if passed or not applicable else (fix or spec.fix), field=field,
                      where=f"row {row.id}, field {field}", applicable=applicable)


# --- kinds ----------------------------------------------------------------------------------------------------


def _conflict(spec: RuleSpec, row: Row, resolution: dict | None, ruleset: Ruleset) -> list[RuleResult]:
    seen = []
    for name, specifier in spec.when.items():
        version, _ = _version_of(row, name, resolution)
        if version is None:
            hint = "" if resolution is not None else " (and no resolution to read it from)"
            return [_result(spec, row, passed=True, applicable=False, message=f"the row has no {name} version{hint}")]
        if not _contains(specifier, version):
            return [_result(spec, row, passed=True, message=f"{name} {version} is outside {specifier}")]
        seen.append(f"{name} {version}")
    return [_result(spec, row, passed=False, message=f"{' with '.join(seen)}: {spec.symptom}")]


def wheel_key(row: Row) -> tuple[str, str, str, bool]:
    """(CUDA major, torch major.minor, Python, cxx11 ABI) of the flash-attn wheel a row needs."""
    torch_mm = ".".join(str(p) for p in Version(row.torch).release[:2])
    return row.cuda.split(".")[0], torch_mm, row.python, flashattn.cxx11abi(row.torch)


def flash_attn_wheels(ruleset: Ruleset, version: str) -> WheelRelease | None:
    return next((r for r in ruleset.flash_attn_wheels if version in r.versions), None)


def _describe(key: tuple[str, str, str, bool]) -> str:
    cuda, torch, python, abi = key
    return f"cu{cuda} torch {torch} Python {python} cxx11abi{'TRUE' if abi else 'FALSE'}"


def _flash_attn(spec: RuleSpec, row: Row, resolution: dict | None, ruleset: Ruleset) -> list[RuleResult]:
    if row.flash_attn is None:
        return [_result(spec, row, passed=True, applicable=False, message="no flash_attn pin (flash-attn not installed)")]
    key = wheel_key(row)
    name = flashattn.wheel_name(flash_attn=row.flash_attn, cuda=row.cuda, torch=row.torch, python=row.python)
    alternatives = [v for r in ruleset.flash_attn_wheels if r.evidence == "verified" and key in r.wheels()
                    for v in r.versions]
    alt = f"; releases with that wheel: {', '.join(alternatives)}" if alternatives else ""
    release = flash_attn_wheels(ruleset, row.flash_attn)
    if release is None:
        known = ", ".join(v for r in ruleset.flash_attn_wheels for v in r.versions)
        return [_result(spec, row, passed=False, severity="warn",
                        message=f"flash-attn {row.flash_attn} is not in the wheel table (known: {known}): "
                                f"cannot tell whether {name} exists{alt}",
                        fix=f"add flash-attn {row.flash_attn} to flash_attn_wheels in {RULES.relative_to(paths.ROOT)} "
                            "(from its release assets), or pick a listed release")]
    wheels = release.wheels()
    if key in wheels:
        if release.evidence == "verified":
            return [_result(spec, row, passed=True, message=f"{name} is published ({release.source})")]
        return [_result(spec, row, passed=False, severity="warn",
                        message=f"{name} is expected but unverified ({release.source})",
                        fix=f"check the v{row.flash_attn} release assets and mark the entry verified, or pick a "
                            f"verified release{alt.replace('; releases with that wheel:', ':')}")]
    torches = sorted({w[1] for w in wheels if (w[0], w[2], w[3]) == (key[0], key[2], key[3])}, key=Version)
    offer = (f"flash-attn {row.flash_attn} has {_describe(key).replace(f'torch {key[1]} ', '')} wheels for torch "
             f"{', '.join(torches)} only") if torches else f"flash-attn {row.flash_attn} has no wheel for {_describe(key)}"
    message = f"no prebuilt {name} ({offer}{alt}): {spec.symptom}"
    if release.evidence != "verified":
        return [_result(spec, row, passed=False, severity="warn", message=message + " (wheel list unverified)")]
    return [_result(spec, row, passed=False, message=message)]


def row_environment(row: Row) -> dict[str, tuple[str, str]]:
    """NAME -> (value, origin) of the environment an image of the row gets; origin 'env' (the row) or
    'env-defaults.yaml:<line>'."""
    out: dict[str, tuple[str, str]] = {}
    lines = _env_default_lines()
    for d in _env_defaults():
        if SpecifierSet(d.vllm).contains(row.vllm, prereleases=True):
            line = lines.get((d.name, d.vllm))
            out[d.name] = (d.value, f"{paths.ENV_DEFAULTS.relative_to(paths.ROOT)}:{line}" if line else "env defaults")
    for name, value in row.env.items():
        out[name] = (value, "env")
    return out


def _vllm_env(spec: RuleSpec, row: Row, resolution: dict | None, ruleset: Ruleset) -> list[RuleResult]:
    data = ruleset.vllm_env
    if not _contains(data.checked, row.vllm):
        return [_result(spec, row, passed=True, applicable=False,
                        message=f"no knob data for vLLM {row.vllm} (covered: {data.checked})")]
    env = row_environment(row)
    known = {name: env[name] for name in data.variables if name in env}
    if not known:
        return [_result(spec, row, passed=True, applicable=False,
                        message=f"sets none of {', '.join(data.variables)}")]
    results, fine = [], []
    for name, (value, origin) in known.items():
        var = data.variables[name]
        field = f"env.{name}" if origin == "env" else "vllm"
        source = "" if origin == "env" else f" (default from {origin})"
        if not _contains(var.exists, row.vllm):
            results.append(_result(spec, row, passed=False, field=field,
                                   message=f"{name}={value}{source} does not exist in vLLM {row.vllm} "
                                           f"(read by {var.exists}): {var.missing}"))
            continue
        band = next((v for v in var.values if _contains(v.vllm, row.vllm)), None)
        if band is None or value in band.accept:
            fine.append(f"{name}={value}")
            continue
        suffix = band.deprecated_suffix
        if suffix and value.endswith(suffix) and value[: -len(suffix)] in band.accept:
            results.append(_result(spec, row, passed=False, severity="warn", field=field,
                                   message=f"{name}={value}{source}: vLLM {row.vllm} strips the deprecated "
                                           f"{suffix} suffix with a warning",
                                   fix=f"write {name}={value[: -len(suffix)]}"))
            continue
        results.append(_result(spec, row, passed=False, field=field,
                               message=f"{name}={value}{source} is not valid for vLLM {row.vllm} "
                                       f"(valid: {', '.join(band.accept)}): {band.invalid.replace('<value>', value)}"))
    if fine:
        results.insert(0, _result(spec, row, passed=True, message=f"valid for vLLM {row.vllm}: {', '.join(fine)}"))
    return results


@functools.cache
def verl_requires_dist(version: str) -> tuple[str, ...]:
    """Requires-Dist lines of verl==version, from its wheel's METADATA (HTTP range read, cached on disk)."""
    meta = pypi.wheel_file("verl", version, f"verl-{version}.dist-info/METADATA")
    return tuple(BytesHeaderParser().parsebytes(meta).get_all("Requires-Dist") or [])


def verl_declared(version: str, python: str) -> list[tuple[Requirement, str]]:
    """verl's requirements that apply to a row: its base requirements and those of its `vllm` extra (following
    verl's references to its own extras), for the row's Python on linux x86_64. (requirement, extra) pairs,
    extra "" for base requirements."""
    reqs = []
    for line in verl_requires_dist(version):
        try:
            reqs.append(Requirement(line))
        except InvalidRequirement:
            continue
    env = {"python_version": python, "python_full_version": f"{python}.0", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
           "implementation_name": "cpython", "platform_python_implementation": "CPython"}
    out: list[tuple[Requirement, str]] = []
    done: set[str] = set()
    todo = ["", "vllm"]
    while todo:
        extra = todo.pop(0)
        if extra in done:
            continue
        done.add(extra)
        for req in reqs:
            if req.marker is None:
                applies = extra == ""
            else:
                try:
                    applies = req.marker.evaluate({**env, "extra": extra})
                except UndefinedEnvironmentName:
                    applies = False
            if not applies:
                continue
            if canonicalize_name(req.name) == "verl":
                todo.extend(sorted(req.extras))
            elif not any(r is req for r, _ in out):
                out.append((req, extra))
    return out


def _verl_ranges(spec: RuleSpec, row: Row, resolution: dict | None, ruleset: Ruleset) -> list[RuleResult]:
    try:
        declared = verl_declared(row.verl, row.python)
    except RuntimeFailure as exc:
        return [_result(spec, row, passed=False, severity="warn",
                        message=f"cannot read verl {row.verl}'s declared requirements: {exc}",
                        fix="check the network or the package index, then validate again")]
    overrides = {canonicalize_name(n): o for n, o in row.overrides.items()}
    results, fine, unknown = [], [], []
    for package in spec.packages:
        canon = canonicalize_name(package)
        reqs = [(r, e) for r, e in declared if canonicalize_name(r.name) == canon and str(r.specifier)]
        if not reqs:
            continue
        version, field = _version_of(row, package, resolution)
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
            results.append(_result(
                spec, row, passed=False, field=field or "verl",
                message=f"verl {row.verl} declares {declared_text}, the row has {package} {version}{where_from}{post}: "
                        f"{spec.symptom}",
                fix=f"pick {package} within {', '.join(str(r.specifier) for r, _ in bad)}, another verl, or add "
                    f"overrides: {{{package}: {{version: \"{version}\", reason: ...}}}} when the pairing is deliberate"))
    if fine or not results:
        extra = f"; no version for {', '.join(unknown)} without a resolution" if unknown else ""
        message = ("; ".join(fine) or "none of " + ", ".join(spec.packages) + " is constrained") + extra
        results.insert(0, _result(spec, row, passed=True, message=f"verl {row.verl}: {message}"))
    return results


def _python(spec: RuleSpec, row: Row, resolution: dict | None, ruleset: Ruleset) -> list[RuleResult]:
    try:
        problems = resolve.check_python(row)
    except RuntimeFailure as exc:
        return [_result(spec, row, passed=False, severity="warn",
                        message=f"cannot read Requires-Python from the index: {exc}",
                        fix="check the network or the package index, then validate again")]
    if not problems:
        pins = ", ".join(p for p in sorted(row.pins()) if p != "flash-attn")
        return [_result(spec, row, passed=True, message=f"Python {row.python} is within Requires-Python of {pins}")]
    return [_result(spec, row, passed=False, message=f"{p.message}: {spec.symptom}", fix=p.fix) for p in problems]


KINDS = {"conflict": _conflict, "flash-attn-wheel": _flash_attn, "vllm-env": _vllm_env,
         "verl-ranges": _verl_ranges, "python-requires": _python}


# --- API ------------------------------------------------------------------------------------------------------


def evaluate(row: Row, resolution: dict | None = None, *, ruleset: Ruleset | None = None,
             skip: tuple[str, ...] = ()) -> list[RuleResult]:
    """Every rule against the row. `resolution`: lockfile.parse(...) entries when validate has them (for packages
    the row does not pin, e.g. ray). `skip`: rule ids to leave out."""
    ruleset = ruleset or load()
    out: list[RuleResult] = []
    for spec in ruleset.rules:
        if spec.id in skip:
            continue
        out.extend(KINDS[spec.kind](spec, row, resolution, ruleset))
    return out


def field_line(matrix_path: Path | str, row: Row, field: str | None) -> int | None:
    """Line of `field` in the row's mapping in the matrix file (or of the default it inherits), else the row's."""
    if not field:
        return row.line
    try:
        doc = yamlio.load(Path(matrix_path))
    except InputError:
        return row.line
    rows = doc.get("rows") if isinstance(doc, dict) else None
    raw = None
    if isinstance(rows, list):
        for index, item in enumerate(rows):
            if yamlio.line_of(rows, index) == row.line:
                raw = item
                break
    top, _, sub = field.partition(".")
    for node in (raw, doc.get("defaults") if isinstance(doc, dict) else None):
        if isinstance(node, dict) and top in node:
            value = node[top]
            if sub and isinstance(value, dict) and sub in value:
                return yamlio.line_of(value, sub)
            return yamlio.line_of(node, top)
    return row.line


def to_errors(row: Row, results: list[RuleResult], matrix_path: Path | str | None = None) -> list[InputError]:
    """Failed results as InputErrors: where = matrix file:line, row id, field; fix = the rule's fix."""
    errors = []
    for result in results:
        if not result.failed:
            continue
        place = f"row {row.id}, field {result.field}"
        if matrix_path is not None:
            line = field_line(matrix_path, row, result.field)
            place = f"{matrix_path}:{line}, {place}" if line else f"{matrix_path}, {place}"
        errors.append(InputError(f"({result.rule}) {result.message}", where=place, fix=result.fix))
    return errors


def warnings(row: Row, results: list[RuleResult]) -> list[str]:
    """Warned results as one line each: 'row <id>, field <f>: (<rule>) <message>; fix: <fix>'."""
    return [f"row {row.id}, field {r.field}: ({r.rule}) {r.message}" + (f"; fix: {r.fix}" if r.fix else "")
            for r in results if r.warned]


def summary(results: list[RuleResult]) -> str:
    """'5 passed, 1 n/a' / '1 failed, 4 passed, 1 n/a': counts by status, worst first."""
    counts = {s: sum(1 for r in results if r.status == s) for s in ("failed", "warned", "passed", "n/a")}
    return ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no rules"


def explain(rows: list[tuple[Row, list[RuleResult]]]) -> str:
    """The `validate --explain` listing: per row, every rule with passed / warned / failed / n/a and why.

    Plain text (print it without markup: messages may contain brackets)."""
    lines = []
    for row, results in rows:
        lines.append(f"{row.id}: {summary(results)}")
        for r in results:
            lines.append(f"  {r.status:<7} {r.rule:<26} {r.message}")
            if r.fix and r.status in ("failed", "warned"):
                lines.append(f"  {'':<7} {'':<26} fix: {r.fix}")
    return "\n".join(lines)
