"""Environment defaults per vLLM version (data: knowledge/env-defaults.yaml)."""

from __future__ import annotations

import functools
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from pydantic import BaseModel, ConfigDict, ValidationError

from imagematrix.model import paths, yamlio
from imagematrix.model.errors import InputError
from imagematrix.model.fields import EnvName, EnvValue, Reason
from imagematrix.model.matrix import Row


class EnvDefault(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: EnvName
    value: EnvValue
    vllm: str
    reason: Reason


def load(path: Path = paths.ENV_DEFAULTS) -> list[EnvDefault]:
    doc = yamlio.load_mapping(path, keys="an `env:` list")
    items = doc.get("env")
    if not isinstance(items, list):
        raise InputError("expected a mapping with an `env:` list", where=str(path))
    out = []
    for index, item in enumerate(items):
        where = f"{path}:{yamlio.line_of(items, index)}"
        if not isinstance(item, dict):
            raise InputError(f"invalid env default: expected a mapping with name, value, vllm and reason, got {item!r:.60}",
                             where=where, fix="write the entry as `- name: ...` with value, vllm and reason below it")
        try:
            entry = EnvDefault.model_validate(dict(item))
            SpecifierSet(entry.vllm)
        except (ValidationError, InvalidSpecifier, TypeError, ValueError) as exc:
            raise InputError(f"invalid env default: {exc}", where=where) from None
        out.append(entry)
    return out


def for_row(row: Row, defaults: list[EnvDefault]) -> dict[str, str]:
    """The environment an image of this row gets: versioned defaults, then the row's own `env`."""
    env = {d.name: d.value for d in defaults if SpecifierSet(d.vllm).contains(row.vllm, prereleases=True)}
    env.update(row.env)
    return dict(sorted(env.items()))


@functools.cache
def _env_defaults() -> tuple[EnvDefault, ...]:
    return tuple(load())



@functools.cache
def _env_default_lines() -> dict[tuple[str, str], int | None]:
    load(paths.ENV_DEFAULTS)  # checked first: a malformed file is bad input naming it, here too
    doc = yamlio.load(paths.ENV_DEFAULTS)
    items = doc.get("env") or []
    return {(str(item.get("name")), str(item.get("vllm"))): yamlio.line_of(items, i) for i, item in enumerate(items)}



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

