"""Reading the files the project trusts least: its data files (knowledge/*.yaml, the patches, GPU run records) and
the raw results a GPU run brings back. Each read is bounded in size, decoded as UTF-8 and, for JSON, parsed without
crashing on depth; every problem is an InputError naming the file (exit 2)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, Field, ValidationError

from imagematrix.model.errors import InputError

# The data files are a few kB; round-trip YAML slows down badly on huge inputs (minutes for tens of MB). A GPU run's
# record and its raw JSON files (env.json, verl_train.json, host-versions.json, image.json) are a few kB too.
MAX_BYTES = 1_000_000
TOO_LARGE_FIX = "a matrix, data file, record or raw result file is a few kB: pass the right file"


def read_bytes(path: Path, *, limit: int = MAX_BYTES, fix: str | None = None) -> bytes:
    """The file's bytes; one over `limit` bytes is refused before it is read."""
    try:
        size = path.stat().st_size
        if size <= limit:
            with path.open("rb") as f:
                data = f.read(limit + 1)  # a file that grew since stat is caught below
            size = max(size, len(data))
    except FileNotFoundError:
        raise InputError("file not found", where=str(path), fix=fix or "pass an existing file") from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", where=str(path), fix=fix) from None
    if size > limit:
        raise InputError(f"the file is {size:,} bytes, over the limit of {limit:,}", where=str(path),
                         fix=fix or TOO_LARGE_FIX)
    return data


def read_text(path: Path, *, limit: int = MAX_BYTES, fix: str | None = None) -> str:
    """The file as UTF-8 text (at most `limit` bytes)."""
    data = read_bytes(path, limit=limit, fix=fix)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte {exc.start})", where=str(path), fix=fix) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(text: str, where: str, *, fix: str | None = None, allow_nan: bool = False) -> Any:
    """JSON text -> value; not JSON, nested too deeply (a RecursionError) or NaN/Infinity (unless allowed: Python's
    json writes them for a float that is one) is an InputError naming `where`."""
    try:
        return json.loads(text, parse_constant=None if allow_nan else _no_constant)
    except RecursionError:
        raise InputError("not JSON this program reads: nested too deeply", where=where, fix=fix) from None
    except ValueError as exc:
        raise InputError(f"not JSON: {exc}", where=where, fix=fix) from None


def load_json(path: Path, *, limit: int = MAX_BYTES, fix: str | None = None, allow_nan: bool = False) -> Any:
    """A JSON file (at most `limit` bytes of UTF-8)."""
    return parse_json(read_text(path, limit=limit, fix=fix), str(path), fix=fix, allow_nan=allow_nan)


def describe(exc: ValidationError, most: int = 3) -> str:
    """A pydantic error in one line: where in the document and what is wrong, for the first `most` problems."""
    found = exc.errors(include_url=False, include_input=False)
    parts = [f"{'.'.join(str(p) for p in err['loc']) or 'the top level'}: {err['msg']}" for err in found[:most]]
    more = f" (and {len(found) - most} more)" if len(found) > most else ""
    return "; ".join(parts) + more


def expect(value: Any, kind: type | tuple[type, ...], where: str, *, what: str, fix: str | None = None) -> Any:
    """value when it is of `kind` (a top level: a mapping, a list), else an InputError naming `where`."""
    if isinstance(value, kind):
        return value
    raise InputError(f"the top level is {type_name(value)}; {what}", where=where, fix=fix)


def type_name(value: Any) -> str:
    """'a mapping', 'a list', 'a string', 'a number', 'null', ... for messages about a value of the wrong type."""
    if value is None:
        return "null (empty)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (int, float)):
        return "a number"
    return f"a {type(value).__name__}"


CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # newlines, tabs, escapes: a line they would break


def check_line(text: str) -> str:
    """text when it is one line without control characters (a record's note), else ValueError saying why."""
    found = CONTROL_RE.search(text)
    if found:
        raise ValueError(f"holds the control character {found.group()!r} at {found.start()}: it must be one line")
    return text


Line = Annotated[str, AfterValidator(check_line)]  # a string field of a data file that is one line of text
Short = Annotated[str, Field(max_length=300), AfterValidator(check_line)]  # ... and a short one (a name, a version)
