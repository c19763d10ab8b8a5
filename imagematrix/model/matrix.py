"""matrix.yaml -> validated rows.

Every value that can reach a Dockerfile line is checked here, against a strict pattern, before anything
else runs. Errors name file, line, row and field, say how to fix it, and are all reported in one pass.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError

from imagematrix.model import paths, tags, yamlio
from imagematrix.model.errors import InputError, InputErrors

# --- value patterns -------------------------------------------------------------------------------------

PACKAGE_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")  # PEP 508 distribution name
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Environment values: no whitespace, quotes, `$`, backslash or shell metacharacters.
ENV_VALUE_RE = re.compile(r"^[A-Za-z0-9_./:,=+@%-]*$")
PYTHON_RE = re.compile(r"^3\.[0-9]{1,2}$")
CUDA_RE = re.compile(r"^[0-9]{2}\.[0-9]$")
PATCH_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
# Free text (override and skip reasons): one line, rendered only into Dockerfile comments and labels;
# no quotes, backslash, `$` or backtick, so it can never escape a comment or a quoted label.
REASON_RE = re.compile(r"^[^\x00-\x1f\x7f\"'`$\\]{10,300}$")

# Docker image reference (distribution/reference grammar), tag or digest required: no implicit `latest`.
_DOMAIN = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*(?::[0-9]+)?"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_REF_RE = re.compile(
    rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::{_TAG}(?:@{_DIGEST})?|@{_DIGEST})$"
)
DEBOOTSTRAP_PREFIX = "debootstrap:"

ROW_KEYS = (
    "id", "verl", "vllm", "torch", "cuda", "flash_attn", "tensordict", "transformers",
    "python", "base", "extras", "env", "overrides", "skip_patches",
)
PIN_FIELDS = ("verl", "vllm", "torch", "tensordict", "transformers", "flash_attn")
PIN_PACKAGES = {"verl": "verl", "vllm": "vllm", "torch": "torch", "tensordict": "tensordict",
                "transformers": "transformers", "flash_attn": "flash-attn"}


def _string(value: Any) -> Any:
    # YAML reads `python: 3.10` as the float 3.1 and `cuda: 12.4` as a float: insist on quoted strings.
    if isinstance(value, bool) or isinstance(value, int | float):
        raise ValueError(f"{value!r} is a YAML number, not a string: quote it (\"{value}\")")
    return value


def _exact_version(value: str) -> str:
    try:
        version = Version(value)
    except InvalidVersion:
        raise ValueError(
            f"{value!r} is not an exact PEP 440 version; write one release, e.g. \"0.8.5\" (no ranges, no 'latest')"
        ) from None
    if version.local is not None:
        raise ValueError(f"{value!r} has a local version label (+...): pin the public release")
    if str(version) != value:
        # accept only the canonical spelling, so tags and locks are stable
        raise ValueError(f"{value!r} is not in canonical form: write \"{version}\"")
    return value


def _matching(pattern: re.Pattern[str], what: str):
    def check(value: str) -> str:
        if not pattern.match(value):
            raise ValueError(f"{value!r} is not a valid {what}")
        return value

    return check


def _base(value: str) -> str:
    if value.startswith(DEBOOTSTRAP_PREFIX):
        suite = value[len(DEBOOTSTRAP_PREFIX):]
        suites = bootstrap_suites()
        if suite not in suites:
            raise ValueError(f"unknown debootstrap suite {suite!r}; known: {', '.join(sorted(suites))} "
                             f"(listed in {paths.BASES.relative_to(paths.ROOT)})")
        return value
    if not IMAGE_REF_RE.match(value):
        raise ValueError(
            f"{value!r} is not a valid image reference with a tag or digest "
            "(e.g. nvidia/cuda:12.4.1-runtime-ubuntu22.04), nor debootstrap:<suite>"
        )
    return value


Str = Annotated[str, BeforeValidator(_string)]
ExactVersion = Annotated[Str, AfterValidator(_exact_version)]
PackageName = Annotated[Str, AfterValidator(_matching(PACKAGE_RE, "package name"))]
EnvName = Annotated[Str, AfterValidator(_matching(ENV_NAME_RE, "environment variable name"))]
EnvValue = Annotated[Str, AfterValidator(_matching(ENV_VALUE_RE, "environment value (allowed: letters, digits, _./:,=+@%-)"))]
PythonVersion = Annotated[Str, AfterValidator(_matching(PYTHON_RE, "Python version (write e.g. \"3.11\")"))]
CudaVersion = Annotated[Str, AfterValidator(_matching(CUDA_RE, "CUDA version (write major.minor, e.g. \"12.4\")"))]
Reason = Annotated[Str, AfterValidator(_matching(REASON_RE, "reason (one line, 10-300 characters, no quotes, $, backtick or backslash)"))]
PatchId = Annotated[Str, AfterValidator(_matching(PATCH_ID_RE, "patch id"))]
RowId = Annotated[Str, AfterValidator(_matching(tags.TAG_RE, "row id (it must be a valid image tag: [A-Za-z0-9_][A-Za-z0-9_.-]{0,127})"))]
BaseRef = Annotated[Str, AfterValidator(_base)]


class Override(BaseModel):
    """A pin that deliberately leaves a range another package declares (passed to uv as an override)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    version: ExactVersion
    reason: Reason


class RowFields(BaseModel):
    """The keys a row (or `defaults`) may carry; all optional here, completeness is checked on Row."""

    model_config = ConfigDict(extra="forbid")
    id: RowId | None = None
    verl: ExactVersion | None = None
    vllm: ExactVersion | None = None
    torch: ExactVersion | None = None
    cuda: CudaVersion | None = None
    flash_attn: ExactVersion | None = None
    tensordict: ExactVersion | None = None
    transformers: ExactVersion | None = None
    python: PythonVersion | None = None
    base: BaseRef | None = None
    extras: dict[PackageName, ExactVersion] = {}
    env: dict[EnvName, EnvValue] = {}
    overrides: dict[PackageName, Override] = {}
    skip_patches: dict[PatchId, Reason] = {}


REQUIRED = ("verl", "vllm", "torch", "cuda", "tensordict", "transformers", "python", "base")


@dataclass(frozen=True)
class Row:
    """One fully specified, validated image row."""

    id: str
    verl: str
    vllm: str
    torch: str
    cuda: str
    flash_attn: str | None
    tensordict: str
    transformers: str
    python: str
    base: str
    extras: dict[str, str]
    env: dict[str, str]
    overrides: dict[str, Override]
    skip_patches: dict[str, str]
    line: int | None = None

    def pins(self) -> dict[str, str]:
        """Distribution name -> exact version for every pinned package of the row (flash-attn included)."""
        out = {PIN_PACKAGES[f]: getattr(self, f) for f in PIN_FIELDS if getattr(self, f) is not None}
        out.update(self.extras)
        return out

    @property
    def bootstrap_suite(self) -> str | None:
        return self.base[len(DEBOOTSTRAP_PREFIX):] if self.base.startswith(DEBOOTSTRAP_PREFIX) else None


@dataclass(frozen=True)
class Matrix:
    path: Path
    rows: tuple[Row, ...]

    @property
    def root(self) -> Path:
        """Outputs (locks/, dockerfiles/generated/) live beside the matrix file."""
        return self.path.parent

    def select(self, ids: list[str] | None) -> list[Row]:
        if not ids:
            return list(self.rows)
        known = {r.id: r for r in self.rows}
        missing = [i for i in ids if i not in known]
        if missing:
            raise InputError(
                f"no row with id {', '.join(map(repr, missing))}",
                where=str(self.path),
                fix=f"use one of: {', '.join(known)}",
            )
        return [known[i] for i in ids]


@functools.cache
def bootstrap_suites() -> dict[str, Any]:
    """The bootstrappable bases of knowledge/bases.yaml (read once)."""
    data = yamlio.load(paths.BASES) or {}
    return dict(data.get("debootstrap") or {})


def _field_errors(exc: ValidationError, where: str) -> list[InputError]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(row)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown key; allowed keys: {', '.join(ROW_KEYS)}"
            fix = "remove or rename the key"
        elif err["type"] in ("dict_type", "model_type"):
            fix = "write a mapping (key: value)"
        elif err["type"] == "missing":
            fix = f"add `{err['loc'][-1]}` (README.md, section 'The matrix')"
        else:
            fix = f"set `{loc}` to a valid value (README.md, section 'The matrix')"
        out.append(InputError(msg, where=f"{where}, field {loc}", fix=fix))
    return out


def load(path: Path | str = paths.MATRIX) -> Matrix:
    path = Path(path)
    doc = yamlio.load(path)
    if not isinstance(doc, dict):
        raise InputError("the top level must be a mapping with `defaults:` and `rows:`", where=str(path))
    unknown = sorted(set(doc) - {"defaults", "rows"})
    if unknown:
        raise InputError(
            f"unknown top-level key(s): {', '.join(map(str, unknown))}",
            where=f"{path}:{yamlio.line_of(doc, unknown[0])}",
            fix="the top level holds only `defaults:` and `rows:`",
        )
    errors: list[InputError] = []

    raw_defaults = doc.get("defaults") or {}
    if not isinstance(raw_defaults, dict):
        raise InputError("`defaults` must be a mapping", where=f"{path}:{yamlio.line_of(doc, 'defaults')}")
    if "id" in raw_defaults:
        errors.append(InputError("`id` cannot have a default", where=f"{path}:{yamlio.line_of(raw_defaults, 'id')}, defaults",
                                 fix="give ids per row, or leave them out to derive them from the pins"))
    try:
        defaults = RowFields.model_validate(dict(raw_defaults))
    except ValidationError as exc:
        errors.extend(_field_errors(exc, f"{path}:{yamlio.line_of(doc, 'defaults')}, defaults"))
        defaults = RowFields()

    raw_rows = doc.get("rows")
    if not isinstance(raw_rows, list) or not raw_rows:
        raise InputErrors(errors + [InputError("`rows` must be a non-empty list of rows", where=str(path),
                                               fix="add at least one row under `rows:`")])

    rows: list[Row] = []
    seen: dict[str, str] = {}
    for index, raw in enumerate(raw_rows):
        line = yamlio.line_of(raw_rows, index)
        label = raw.get("id") if isinstance(raw, dict) and isinstance(raw.get("id"), str) else f"#{index + 1}"
        where = f"{path}:{line}, row {label}"
        if not isinstance(raw, dict):
            errors.append(InputError("a row must be a mapping of keys to pins", where=where))
            continue
        try:
            fields = RowFields.model_validate(dict(raw))
        except ValidationError as exc:
            errors.extend(_field_errors(exc, where))
            continue
        row, row_errors = _complete(defaults, fields, where, line)
        errors.extend(row_errors)
        if row is None:
            continue
        if row.id in seen:
            errors.append(InputError(f"duplicate row id {row.id!r} (also {seen[row.id]})", where=where,
                                     fix="give one of the rows an explicit, different `id`"))
            continue
        seen[row.id] = where
        rows.append(row)
    if errors:
        raise InputErrors(errors)
    return Matrix(path=path, rows=tuple(rows))


def _complete(defaults: RowFields, fields: RowFields, where: str, line: int | None) -> tuple[Row | None, list[InputError]]:
    merged: dict[str, Any] = {}
    for key in RowFields.model_fields:
        own = getattr(fields, key)
        default = getattr(defaults, key)
        if isinstance(own, dict):
            merged[key] = {**default, **own}
        else:
            merged[key] = own if key in fields.model_fields_set else default
    errors = [
        InputError(f"missing required key `{key}`", where=where, fix=f"set `{key}` in the row or under `defaults:`")
        for key in REQUIRED
        if merged[key] is None
    ]
    if errors:
        return None, errors

    suite = merged["base"][len(DEBOOTSTRAP_PREFIX):] if merged["base"].startswith(DEBOOTSTRAP_PREFIX) else None
    if suite is not None:
        pythons = [str(p) for p in bootstrap_suites()[suite].get("python", [])]
        if merged["python"] not in pythons:
            errors.append(InputError(
                f"python {merged['python']} is not packaged by {suite} (it has {', '.join(pythons)})",
                where=f"{where}, field python",
                fix=f"set python to one of {', '.join(pythons)} or pick another base",
            ))

    pinned = {canonicalize_name(PIN_PACKAGES[f]): f for f in PIN_FIELDS}
    for name in merged["extras"]:
        if canonicalize_name(name) in pinned:
            errors.append(InputError(
                f"extras pins {name!r}, which the row already pins as `{pinned[canonicalize_name(name)]}`",
                where=f"{where}, field extras.{name}", fix="pin it once, in its own key"))
    for name, override in merged["overrides"].items():
        field = pinned.get(canonicalize_name(name))
        if field and merged[field] != override.version:
            errors.append(InputError(
                f"override {name}=={override.version} disagrees with the row's `{field}: {merged[field]}`",
                where=f"{where}, field overrides.{name}", fix="make the override's version equal the row's pin"))
        extra = merged["extras"].get(name)
        if extra and extra != override.version:
            errors.append(InputError(
                f"override {name}=={override.version} disagrees with extras {name}=={extra}",
                where=f"{where}, field overrides.{name}", fix="make both versions equal"))
    if errors:
        return None, errors

    row_id = merged["id"] or tags.row_id(
        verl=merged["verl"], vllm=merged["vllm"], torch=merged["torch"], cuda=merged["cuda"],
        python=merged["python"], flash_attn=merged["flash_attn"],
    )
    values = {k: v for k, v in merged.items() if k != "id"}
    return Row(id=row_id, line=line, **values), []
