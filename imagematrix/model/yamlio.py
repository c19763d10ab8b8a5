"""YAML loading with positions, so errors can name file and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from imagematrix.model.errors import InputError

# The data files are a few kB; round-trip YAML slows down badly on huge inputs (minutes for tens of MB).
MAX_BYTES = 1_000_000


def load(path: Path) -> Any:
    """Load a YAML file (round-trip, keeping positions). Duplicate keys and syntax errors are InputErrors."""
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise InputError(f"the file is {size:,} bytes, over the limit of {MAX_BYTES:,}", where=str(path),
                             fix="a matrix or data file is a few kB: pass the right file")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("file not found", where=str(path), fix="pass an existing file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read: {exc}", where=str(path)) from None
    try:
        return YAML(typ="rt").load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise InputError(f"invalid YAML: {problem}", where=where, fix="fix the YAML syntax at that line") from None
    except YAMLError as exc:
        raise InputError(f"invalid YAML: {exc}", where=str(path)) from None


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
