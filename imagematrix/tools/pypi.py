"""Read single files out of wheels on a PyPI-compatible index without downloading the wheel.

A wheel is a zip: its central directory sits at the end, so `zipfile` over an HTTP-range file object reads
one member in a handful of requests (a 260 MB vLLM wheel costs ~7 requests and well under 1 MB). Files are
cached under ~/.cache/imagematrix/wheel-files (or $IMAGEMATRIX_CACHE).
"""

from __future__ import annotations

import io
import json
import os
import re
import ssl
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from html import unescape

from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

from imagematrix.model import paths, secrets
from imagematrix.model.errors import InputError, RuntimeFailure
from imagematrix.model.paths import write_atomic
from imagematrix.tools import http

DEFAULT_INDEX = "https://pypi.org/simple"
# The variables that name the package index, uv's first: one index for uv's resolution and for this reader.
INDEX_VARIABLES = ("UV_DEFAULT_INDEX", "UV_INDEX_URL", "PIP_INDEX_URL")


def index_url() -> str:
    """The index everything resolves and reads from: the first of INDEX_VARIABLES that is set, else PyPI.
    InputError when that variable's URL cannot be read at all (a bad port, a broken IPv6 form, not http(s))."""
    name = next((v for v in INDEX_VARIABLES if os.environ.get(v)), None)
    url = (os.environ[name] if name else DEFAULT_INDEX).rstrip("/")
    if name:
        problem = url_problem(url)
        if problem:
            raise InputError(f"{name}={secrets.redact_url(url)}: {problem}", where=f"environment variable {name}",
                             fix=f"set {name} to the index's http(s) URL, e.g. https://user:token@host:8443/simple")
    return url


def url_problem(url: str) -> str | None:
    """Why url is no index URL this reader can fetch (None when it is one): not http(s), no host, a port that is
    not a number from 1 to 65535, a broken IPv6 form, a space or control character."""
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7f for c in url):
        return "the URL holds a space or a control character"
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:  # "Invalid IPv6 URL", "Port out of range 0-65535", a netloc quoted whole...
        return f"not a URL ({secrets.redact_userinfo_of(url, str(exc))})"
    if parts.scheme.lower() not in ("http", "https"):
        return f"not an http(s) URL (scheme {parts.scheme or 'missing'!r})"
    if not parts.hostname:
        return "the URL names no host"
    if port == 0:
        return "port 0 is no port"
    return None


def _context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE") or None)


def request(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> urllib.request.Request:
    """A request for url on the index: credentials in the URL (https://user:secret@host/simple, as uv takes them)
    go into a Basic Authorization header (urllib cannot use URL userinfo), never into a message."""
    req = http.request(url, method)
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    return req


def get(url: str, *, limit: int, deadline: float, method: str = "GET",
        headers: dict[str, str] | None = None) -> http.Answer:
    """The answer of the index (or the file host it links to) for url, read through http.fetch with that cap and
    deadline. RuntimeFailure naming the URL (credentials redacted) when it cannot be had."""
    shown = secrets.redact_url(url)
    try:
        return http.fetch(request(url, method, headers), limit=limit, deadline=deadline, context=_context())
    except http.Refused as exc:
        raise RuntimeFailure(f"cannot fetch {shown}: {exc}") from None
    except (OSError, ValueError) as exc:  # ValueError: http.client.InvalidURL, a URL urllib cannot split
        raise RuntimeFailure(f"cannot fetch {shown}: {http.why(exc)}") from None


@dataclass(frozen=True)
class Anchor:
    """One file link of a PEP 503 simple page."""

    href: str  # as written (unescaped), without its #fragment
    url: str  # href made absolute against the page
    sha256: str | None  # from a #sha256= fragment
    requires_python: str | None  # data-requires-python, unescaped ("" when present but empty)
    yanked: bool  # data-yanked present
    text: str  # the link's text (the file name, on PyPI)


_ANCHOR_RE = re.compile(r"(<a\s[^>]*>)(?:(.*?)</a>)?", re.S)


def anchors(html: str, page: str) -> list[Anchor]:
    """Every link with an href on a PEP 503 page (the one parser of simple pages: this module, pypi_releases)."""
    out = []
    for tag, body in _ANCHOR_RE.findall(html):
        href = re.search(r'href="([^"]+)"', tag)
        if not href:
            continue
        link, _, fragment = unescape(href.group(1)).partition("#")
        requires = re.search(r'data-requires-python="([^"]*)"', tag)
        out.append(Anchor(href=link, url=urllib.parse.urljoin(page, link),
                          sha256=fragment[len("sha256="):] if fragment.startswith("sha256=") else None,
                          requires_python=unescape(requires.group(1)) if requires else None,
                          yanked="data-yanked" in tag, text=unescape(body.strip())))
    return out


def _files(package: str, index: str | None = None) -> list[tuple[str, str | None]]:
    """(url, requires-python) of every file on the index's simple (PEP 503) page of the package."""
    page = f"{(index or index_url()).rstrip('/')}/{canonicalize_name(package)}/"
    # hrefs and data-requires-python are ASCII; a mirror's page in another encoding must not stop the reading
    html = get(page, limit=http.PAGE_LIMIT, deadline=http.PAGE_DEADLINE).body.decode("utf-8", errors="replace")
    return [(a.url, a.requires_python) for a in anchors(html, page)]  # absolute: a mirror may link relatively


def links(package: str, index: str) -> list[tuple[str, str | None]]:
    """(absolute url, sha256 from the link's #sha256= fragment or None) of every file on a PEP 503 page."""
    page = f"{index.rstrip('/')}/{canonicalize_name(package)}/"
    try:
        html = get(page, limit=http.PAGE_LIMIT, deadline=http.PAGE_DEADLINE).body.decode("utf-8", errors="replace")
    except RuntimeFailure as exc:
        raise RuntimeFailure(f"cannot read the index page {str(exc).removeprefix('cannot fetch ')}") from None
    return [(a.url, a.sha256) for a in anchors(html, page)]


def _version_of(url: str) -> str | None:
    name = url.rsplit("/", 1)[-1]
    if name.endswith(".whl"):
        try:
            return str(parse_wheel_filename(name)[1])
        except ValueError:
            return None
    return None


def wheel_urls(package: str, version: str, index: str | None = None) -> list[str]:
    """URLs of the wheels of package==version on the index."""
    return [url for url, _ in _files(package, index) if _version_of(url) == version]


def versions(package: str) -> list[Version]:
    """Released versions with a wheel on the index, newest first (pre-releases left out)."""
    found = {Version(v) for url, _ in _files(package) if (v := _version_of(url))}
    return sorted((v for v in found if not v.is_prerelease), reverse=True)


def requires_python(package: str, version: str) -> str | None:
    """The Requires-Python the index declares for package==version's wheels ("" when none), cached on disk.

    uv ignores upper bounds of dependencies' Requires-Python, so the row's Python is checked against this.
    None when the version has no wheel on the index.
    """
    cache = paths.cache_dir() / "requires-python.json"
    key = f"{canonicalize_name(package)}=={version}"
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key]
    found = [req or "" for url, req in _files(package) if _version_of(url) == version]
    value = found[0] if found else None
    if value is not None:
        known[key] = value
        write_atomic(cache, json.dumps(known, indent=1, sort_keys=True))
    return value


class _RangeFile(io.RawIOBase):
    """A wheel on the index as a seekable file read by HTTP byte ranges: each answer capped at the range asked for
    and read within http.RANGE_DEADLINE, all of them together at most `budget` bytes."""

    def __init__(self, url: str, budget: int):
        self.url = url
        self.shown = secrets.redact_url(url)
        self.pos = 0
        self.budget = budget
        self.fetched = 0
        self.size = self._size()

    def _size(self) -> int:
        head = get(self.url, limit=0, deadline=http.RANGE_DEADLINE, method="HEAD")
        length = head.headers.get("Content-Length", "").strip()
        if length.isdigit():
            return int(length)
        # no Content-Length on the HEAD (a proxy, a server that streams): the size from a one-byte range's answer
        try:
            probe = get(self.url, limit=1, deadline=http.RANGE_DEADLINE, headers={"Range": "bytes=0-0"})
        except RuntimeFailure as exc:
            probe, why = None, str(exc).removeprefix(f"cannot fetch {self.shown}: ")
        else:
            why = f"HTTP {probe.status}, Content-Range {probe.headers.get('Content-Range')!r}"
        total = re.fullmatch(r"bytes\s+0-0/(\d+)", (probe.headers.get("Content-Range") or "").strip()) if probe else None
        if probe is not None and probe.status == 206 and total:
            return int(total.group(1))
        raise RuntimeFailure(f"{self.shown} gives no size: its HEAD answer has no Content-Length and a byte range "
                             f"did not say it either ({why}); the wheel cannot be read by ranges (fix: an index or "
                             "file host that serves byte ranges, as PyPI does)")

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        pos = {0: offset, 1: self.pos + offset, 2: self.size + offset}[whence]
        if pos < 0:  # a zip shorter than its end record
            raise ValueError(f"negative seek position {pos}")
        self.pos = pos
        return self.pos

    def readinto(self, buffer) -> int:
        if self.pos >= self.size:
            return 0
        end = min(self.pos + len(buffer), self.size) - 1
        want = end - self.pos + 1
        if self.fetched + want > self.budget:
            raise RuntimeFailure(f"{self.shown}: reading one file out of it takes more than "
                                 f"{http.size_text(self.budget)} of byte ranges: not read further")
        answer = get(self.url, limit=want, deadline=http.RANGE_DEADLINE, headers={"Range": f"bytes={self.pos}-{end}"})
        data = answer.body
        if not data or (answer.status != 206 and not (self.pos == 0 and len(data) == self.size)):
            raise RuntimeFailure(f"{self.shown} did not answer the byte range {self.pos}-{end} "
                                 f"(HTTP {answer.status}, {len(data)} bytes); fix: an index or file host that serves "
                                 "byte ranges, as PyPI does")
        self.fetched += len(data)
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)


def wheel_file(package: str, version: str, member: str, *, platform: str = "x86_64") -> bytes:
    """Content of `member` inside the package==version wheel (the first wheel for `platform`), cached; a member
    that inflates past http.MEMBER_LIMIT is refused (RuntimeFailure naming the wheel), and nothing is cached."""
    cached = paths.cache_dir() / "wheel-files" / f"{canonicalize_name(package)}-{version}" / member
    if cached.exists():
        return cached.read_bytes()
    urls = [u for u in wheel_urls(package, version) if platform in u or u.endswith("-any.whl")]
    if not urls:
        raise RuntimeFailure(f"no {platform} wheel of {package}=={version} on the index")
    shown, limit = secrets.redact_url(urls[0]), http.MEMBER_LIMIT
    try:
        with zipfile.ZipFile(io.BufferedReader(_RangeFile(urls[0], http.WHEEL_READ_LIMIT), buffer_size=1 << 16)) as wheel:
            try:
                info = wheel.getinfo(member)
            except KeyError:
                raise RuntimeFailure(f"{member} is not in {urls[0].rsplit('/', 1)[-1]}") from None
            if info.file_size > limit:
                raise RuntimeFailure(f"{member} in {shown} inflates to {info.file_size} bytes, over the "
                                     f"{http.size_text(limit)} limit: not read")
            with wheel.open(info) as opened:
                data = opened.read(limit + 1)
            if len(data) > limit:
                raise RuntimeFailure(f"{member} in {shown} inflates past the {http.size_text(limit)} limit: not read")
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, ValueError) as exc:
        raise RuntimeFailure(f"{shown} is not a wheel that can be read ({type(exc).__name__}: "
                             f"{secrets.redact_text(str(exc))[:120]})") from None
    write_atomic(cached, data)
    return data
