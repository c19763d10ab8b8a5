"""matrix.yaml -> validated rows.

Every value that can reach a Dockerfile line is checked here, against a strict pattern, before anything
else runs. Errors name file, line, row and field, say how to fix it, and are all reported in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from imagematrix.model import fields, paths, row_checks, tags, yamlio
from imagematrix.model.errors import InputError, InputErrors


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
    overrides: dict[str, fields.Override]
    skip_patches: dict[str, str]
    rollout_only: str | None = None  # the reason this image is for rollout, not verl training
    flash_attn_archs: tuple[str, ...] | None = None  # compute capabilities of a compiled flash-attn wheel
    verl_extras: tuple[str, ...] = ()  # verl's extras installed with it, besides [vllm] (verl-core under a vllm override)
    gpus: tuple[str, ...] = ()  # GPUs its binaries must cover natively (checked by the build's coverage step)
    gpus_jit: tuple[str, ...] = ()  # GPUs they must cover, PTX JIT accepted
    platforms: tuple[str, ...] = (fields.DEFAULT_PLATFORM,)  # linux/amd64 first, then the others it is built for
    line: int | None = None

    def pins(self) -> dict[str, str]:
        """Distribution name -> exact version for every pinned package of the row (flash-attn included)."""
        out = {fields.PIN_PACKAGES[f]: getattr(self, f) for f in fields.PIN_FIELDS if getattr(self, f) is not None}
        out.update(self.extras)
        return out

    @property
    def bootstrap_suite(self) -> str | None:
        return self.base[len(fields.DEBOOTSTRAP_PREFIX):] if self.base.startswith(fields.DEBOOTSTRAP_PREFIX) else None

    @property
    def base_image(self) -> str:
        """The image the build starts FROM: the bootstrapped local image for debootstrap:<suite>, else the base."""
        suite = self.bootstrap_suite
        return fields.BOOTSTRAP_IMAGE.format(suite=suite) if suite else self.base

    def platform_base_image(self, platform: str = fields.DEFAULT_PLATFORM) -> str:
        """base_image for platform: a debootstrap base is bootstrapped per architecture, so another platform's is its
        own local image (imagematrix-base:<suite>-arm64); a registry base is the same (multi-arch) reference."""
        if platform == fields.DEFAULT_PLATFORM or not self.bootstrap_suite:
            return self.base_image
        return fields.BOOTSTRAP_IMAGE.format(suite=f"{self.bootstrap_suite}-{platform.rsplit('/', 1)[-1]}")

    @property
    def base_digest(self) -> str | None:
        """The published base's manifest digest (knowledge/bases.yaml) for a debootstrap:<suite> row; None when the
        suite has none (the base is then bootstrapped and imported on the building machine)."""
        suite = self.bootstrap_suite
        return fields.bootstrap_suites()[suite].get("digest") if suite else None

    def base_ref(self, registry: str) -> str:
        """What the build starts FROM when the base comes from registry: REGISTRY/imagematrix-base@<digest> for a
        published suite, else base_image."""
        digest = self.base_digest
        return f"{registry.rstrip('/')}/{fields.BASE_REPOSITORY}@{digest}" if digest else self.base_image


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


def _field_errors(exc: ValidationError, where: str) -> list[InputError]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(row)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown key; allowed keys: {', '.join(fields.ROW_KEYS)}"
            fix = "remove or rename the key"
        elif err["type"] in ("dict_type", "model_type"):
            fix = "write a mapping (key: value)"
        elif err["type"] == "missing":
            fix = f"add `{err['loc'][-1]}` (README.md, section 'The matrix')"
        else:
            fix = f"set `{loc}` to a valid value (README.md, section 'The matrix')"
        out.append(InputError(msg, where=f"{where}, field {loc}", fix=fix))
    return out


def _check_top_level(doc, path: Path) -> None:
    """Only `defaults:` and `rows:`; else an InputError at the first other key's line."""
    # in file order: keys need not be strings (`1:`, `? [a]`, `null:`), nor comparable with each other
    unknown = [key for key in doc if key not in ("defaults", "rows")]
    if unknown:
        try:
            line = doc.lc.key(unknown[0])[0] + 1  # also for an int or null key, which line_of takes for other things
        except (AttributeError, KeyError, TypeError):
            line = yamlio.line_of(doc)
        raise InputError(
            f"unknown top-level key(s): {', '.join(repr(k) if not isinstance(k, str) else k for k in unknown)}",
            where=f"{path}:{line}",
            fix="the top level holds only `defaults:` and `rows:`",
        )


def _defaults(doc, path: Path, errors: list[InputError]) -> tuple[fields.RowFields, frozenset[str]]:
    """The valid defaults and the keys whose default is invalid (those reported in errors)."""
    raw_defaults = doc.get("defaults") or {}
    if not isinstance(raw_defaults, dict):
        raise InputError("`defaults` must be a mapping", where=f"{path}:{yamlio.line_of(doc, 'defaults')}")
    if "id" in raw_defaults:
        errors.append(InputError("`id` cannot have a default", where=f"{path}:{yamlio.line_of(raw_defaults, 'id')}, defaults",
                                 fix="give ids per row, or leave them out to derive them from the pins"))
    broken: frozenset[str] = frozenset()  # defaults reported invalid here: not reported again as missing per row
    try:
        defaults = fields.RowFields.model_validate(dict(raw_defaults))
    except ValidationError as exc:
        errors.extend(_field_errors(exc, f"{path}:{yamlio.line_of(doc, 'defaults')}, defaults"))
        broken = frozenset(str(e["loc"][0]) for e in exc.errors() if e["loc"])
        try:  # the valid defaults still apply, so rows are checked as they will be once the bad one is fixed
            defaults = fields.RowFields.model_validate({k: v for k, v in raw_defaults.items() if k not in broken})
        except ValidationError:
            broken, defaults = frozenset(map(str, raw_defaults)), fields.RowFields()
    return defaults, broken


def load(path: Path | str = paths.MATRIX) -> Matrix:
    path = Path(path)
    doc = yamlio.load_mapping(path, keys="`defaults:` and `rows:`")
    _check_top_level(doc, path)
    errors: list[InputError] = []
    defaults, broken = _defaults(doc, path, errors)

    raw_rows = doc.get("rows")
    if not isinstance(raw_rows, list) or not raw_rows:
        raise InputErrors(errors + [InputError("`rows` must be a non-empty list of rows", where=str(path),
                                               fix="add at least one row under `rows:`")])

    rows: list[Row] = []
    seen: dict[str, str] = {}
    for index, raw in enumerate(raw_rows):
        line = yamlio.line_of(raw_rows, index)
        # a row is named by its id only when that is a valid one (an id with a newline would split the message)
        given_id = raw.get("id") if isinstance(raw, dict) else None
        label = given_id if isinstance(given_id, str) and tags.TAG_RE.fullmatch(given_id) else f"#{index + 1}"
        where = f"{path}:{line}, row {label}"
        if not isinstance(raw, dict):
            errors.append(InputError("a row must be a mapping of keys to pins", where=where))
            continue
        try:
            given = fields.RowFields.model_validate(dict(raw))
        except ValidationError as exc:
            errors.extend(_field_errors(exc, where))
            continue
        row, row_errors = _complete(defaults, given, where, line, broken)
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


def _merged(defaults: fields.RowFields, given: fields.RowFields) -> dict[str, Any]:
    """The row's keys with the defaults filled in (mappings merged, the row's own entries winning)."""
    merged: dict[str, Any] = {}
    for key in fields.RowFields.model_fields:
        own = getattr(given, key)
        default = getattr(defaults, key)
        if isinstance(own, dict):
            merged[key] = {**default, **own}
        else:
            merged[key] = own if key in given.model_fields_set else default
    return merged


def _complete(defaults: fields.RowFields, given: fields.RowFields, where: str, line: int | None,
              broken: frozenset[str] = frozenset()) -> tuple[Row | None, list[InputError]]:
    """The row with the defaults filled in, or None and its errors. A required key missing only because its default
    is invalid (`broken`, already reported) leaves the row out without another error."""
    merged = _merged(defaults, given)
    missing = [key for key in fields.REQUIRED if merged[key] is None]
    errors = [
        InputError(f"missing required key `{key}`", where=where, fix=f"set `{key}` in the row or under `defaults:`")
        for key in missing
        if key not in broken
    ]
    if missing:
        return None, errors
    errors = row_checks.base_errors(merged, where) + row_checks.pin_errors(merged, where) \
             + row_checks.list_errors(merged, where)
    errors += _platforms(merged, where)
    if errors:
        return None, errors

    row_id = merged["id"] or tags.row_id(
        verl=merged["verl"], vllm=merged["vllm"], torch=merged["torch"], cuda=merged["cuda"],
        python=merged["python"], flash_attn=merged["flash_attn"],
    )
    if row_id in fields.RESERVED_IDS:
        return None, [InputError(f"row id {row_id!r} is reserved (locks/{row_id}.txt belongs to the tool)",
                                 where=f"{where}, field id", fix="give the row another id, or leave `id` out")]
    values = {k: v for k, v in merged.items() if k != "id"}
    return Row(id=row_id, line=line, **values), []


def _platforms(merged: dict[str, Any], where: str) -> list[InputError]:
    """The row's `platforms` checked and put in their order (linux/amd64 first), default amd64 only; the errors."""
    platforms = merged["platforms"]
    if platforms is None:
        merged["platforms"] = (fields.DEFAULT_PLATFORM,)
        return []
    merged["platforms"] = tuple(p for p in fields.PLATFORMS if p in platforms)
    if len(set(platforms)) == len(platforms) and fields.DEFAULT_PLATFORM in platforms:
        return []
    return [InputError(f"platforms must list each platform once, {fields.DEFAULT_PLATFORM} among them "
                       f"(it lists {', '.join(platforms) or 'none'})", where=f"{where}, field platforms",
                       fix=f"write e.g. [{', '.join(fields.PLATFORMS)}]; an arm64-only row is not supported (its "
                           "amd64 image is the one every other stage checks)")]
