"""Every release of a package on the index, sdist-only ones included (flash-attn has no wheel on PyPI), with
whether it has a wheel, its Requires-Python and when it was uploaded.

One read of the package's simple page: the JSON form (PEP 691, with upload times per PEP 700) where the index
speaks it, else the HTML form (PEP 503; no upload times there). Yanked files do not count.
`imagematrix.tools.pypi.versions` lists only versions with a wheel, which is what a resolution can install;
this module answers "what has been released".
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from imagematrix.model import secrets
from imagematrix.model.errors import RuntimeFailure
from imagematrix.tools import http, pypi

JSON_TYPE = "application/vnd.pypi.simple.v1+json"


@dataclass(frozen=True)
class Release:
    version: str
    wheel: bool  # at least one (unyanked) wheel
    requires_python: str | None  # of its wheels when it has any, else of its sdist; None when undeclared
    uploaded: str | None  # the earliest upload time of its files (ISO 8601), None when the index does not say

    def to_json(self) -> dict:
        return {"version": self.version, "wheel": self.wheel, "requires_python": self.requires_python,
                "uploaded": self.uploaded}

    @classmethod
    def from_json(cls, data: dict) -> Release:
        return cls(version=data["version"], wheel=bool(data["wheel"]), requires_python=data.get("requires_python"),
                   uploaded=data.get("uploaded"))


@dataclass(frozen=True)
class File:
    filename: str
    requires_python: str | None = None
    uploaded: str | None = None
    yanked: bool = False


def version_of(filename: str, package: str) -> tuple[Version, bool] | None:
    """(version, is a wheel) from a distribution's file name; None for files that are neither (or not the package's)."""
    try:
        if filename.endswith(".whl"):
            name, version, _, _ = parse_wheel_filename(filename)
            wheel = True
        elif filename.endswith((".tar.gz", ".zip")):
            name, version = parse_sdist_filename(filename)
            wheel = False
        else:
            return None
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        return None
    if canonicalize_name(name) != canonicalize_name(package):
        return None
    return version, wheel


def releases_from_files(package: str, files: list[File]) -> list[Release]:
    """The releases the files make up, newest first; pre- and dev releases and wholly yanked releases left out."""
    found: dict[Version, dict] = {}
    for f in files:
        parsed = version_of(f.filename, package)
        if parsed is None or f.yanked:
            continue
        version, wheel = parsed
        if version.is_prerelease or version.is_devrelease:
            continue
        entry = found.setdefault(version, {"wheel": False, "wheel_rp": None, "sdist_rp": None, "uploaded": None})
        if wheel:
            entry["wheel"] = True
            entry["wheel_rp"] = entry["wheel_rp"] or f.requires_python
        else:
            entry["sdist_rp"] = entry["sdist_rp"] or f.requires_python
        if f.uploaded and (entry["uploaded"] is None or f.uploaded < entry["uploaded"]):
            entry["uploaded"] = f.uploaded
    return [Release(version=str(v), wheel=e["wheel"], requires_python=e["wheel_rp"] if e["wheel"] else e["sdist_rp"],
                    uploaded=e["uploaded"])
            for v, e in sorted(found.items(), reverse=True)]


def parse_json_page(text: str) -> list[File]:
    """The files of a PEP 691 page; ValueError when it is not one (not JSON, or fields of the wrong type)."""
    doc = json.loads(text)
    items = doc.get("files", []) if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise ValueError("not a PEP 691 project page (no `files` list)")
    files = []
    for f in items:
        if not (isinstance(f, dict) and isinstance(f.get("filename"), str)
                and all(isinstance(f.get(k), (str, type(None))) for k in ("requires-python", "upload-time"))):
            raise ValueError(f"not a PEP 691 file entry: {str(f)[:80]}")
        files.append(File(filename=f["filename"], requires_python=f.get("requires-python") or None,
                          uploaded=f.get("upload-time"), yanked=bool(f.get("yanked"))))
    return files


def parse_html_page(text: str, page: str = "") -> list[File]:
    files = []
    for a in pypi.anchors(text, page):
        filename = urllib.parse.unquote(urllib.parse.urlsplit(a.href).path.rsplit("/", 1)[-1]) or a.text
        files.append(File(filename=filename, requires_python=a.requires_python or None, yanked=a.yanked))
    return files


def _read(url: str) -> tuple[str, str]:
    """(Content-Type, text) of the index page at url, read with http.PAGE_LIMIT and http.PAGE_DEADLINE."""
    try:
        answer = pypi.get(url, limit=http.PAGE_LIMIT, deadline=http.PAGE_DEADLINE,
                          headers={"Accept": f"{JSON_TYPE}, text/html;q=0.1"})  # userinfo: Basic auth
    except RuntimeFailure as exc:
        raise RuntimeFailure(f"cannot read the index page {str(exc).removeprefix('cannot fetch ')}") from None
    return answer.headers.get("Content-Type", ""), answer.body.decode("utf-8", errors="replace")


def releases(package: str, index: str | None = None) -> list[Release]:
    """Every release of package on the index (default: the one uv resolves from), newest first."""
    return releases_from_files(package, files(package, index))


def files(package: str, index: str | None = None) -> list[File]:
    """Every file of package on the index's simple page (default: the one uv resolves from), yanked ones marked."""
    page = f"{(index or pypi.index_url()).rstrip('/')}/{canonicalize_name(package)}/"
    content_type, text = _read(page)
    try:
        return parse_json_page(text) if content_type.startswith(JSON_TYPE) else parse_html_page(text, page)
    except RecursionError:  # [[[[...]]]] nested deeper than the parser goes
        raise RuntimeFailure(f"the index page {secrets.redact_url(page)} is not a simple-index page ({content_type}): "
                             "JSON nested too deep") from None
    except ValueError as exc:  # JSONDecodeError included: garbage, or bytes that are not UTF-8, from a mirror or proxy
        raise RuntimeFailure(f"the index page {secrets.redact_url(page)} is not a simple-index page ({content_type}): "
                             f"{str(exc)[:120]}") from None
