"""YAML loading with positions, so errors can name file and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from imagematrix.model import datafile
from imagematrix.model.datafile import MAX_BYTES  # noqa: F401 (the one limit on data files, read here first)
from imagematrix.model.errors import InputError

MAX_VALUES = 200_000  # values a data file may expand to, aliases counted each time they are used: an alias bomb of
# under 1 KB expands to billions (the largest committed file, a matrix of 12 rows, holds a few thousand)


def _bounded(doc: Any, path: Path) -> Any:
    """`doc` when walking it, every alias expanded as its users see it, visits at most MAX_VALUES values."""
    todo, seen = [doc], 0
    while todo:
        node = todo.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise InputError(f"the YAML expands to more than {MAX_VALUES} values (anchors and aliases, `&a` / `*a`, "
                             "used over and over)", where=str(path), fix="write the values out without aliases")
        if isinstance(node, dict):
            todo.extend(node.keys())
            todo.extend(node.values())
        elif isinstance(node, list | tuple | set):
            todo.extend(node)
    return doc


def load(path: Path) -> Any:
    """Load a YAML file (round-trip, keeping positions). Duplicate keys, syntax errors and alias bombs are
    InputErrors."""
    text = datafile.read_text(path)
    try:
        return _bounded(YAML(typ="rt").load(text), path)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise InputError(f"invalid YAML: {problem}", where=where, fix="fix the YAML syntax at that line") from None
    except YAMLError as exc:
        raise InputError(f"invalid YAML: {exc}", where=str(path)) from None


def load_mapping(path: Path, *, keys: str, fix: str | None = None) -> Any:
    """A YAML file whose top level must be a mapping (every data file's): one that is a list, a string, a number or
    empty (null) is bad input naming the file and what it holds instead. keys: what the mapping holds, for the
    message (e.g. "an `env:` list")."""
    doc = load(path)
    if not isinstance(doc, dict):
        raise InputError(f"the top level is {datafile.type_name(doc)}, not a mapping with {keys}",
                         where=f"{path}:{line_of(doc) or 1}",
                         fix=fix or "see the comment at the top of the file for its form")
    return doc


def line_of(node: Any, key: Any = None) -> int | None:
    """1-based line of `node[key]` (or of `node` itself) when ruamel recorded it."""
    lc = getattr(node, "lc", None)
    if lc is None:
        return None
    try:
        if key is None:
            return lc.line + 1
        if isinstance(key, int):
            return lc.item(key)[0] + 1
        return lc.key(key)[0] + 1
    except (KeyError, IndexError, TypeError, AttributeError):
        return lc.line + 1


def line_at(doc: Any, loc: tuple | list) -> int | None:
    """1-based line of the deepest node on the path `loc` (a pydantic error's location) that ruamel recorded."""
    node, line = doc, None
    for part in loc:
        try:
            line = line_of(node, part) or line  # a scalar (a key's value) has no line of its own
            node = node[part]
        except (KeyError, IndexError, TypeError):
            break
    return line
