"""Plain HTTP(S) to a URL that may carry credentials, from a server that may be hostile: every read of the network
goes through fetch(), which caps the answer's size and bounds the whole request by a deadline (issue 26, items 4
and 5); the caps and deadlines of each kind of read are set here, in one place. And the URL safe to print."""

from __future__ import annotations

import base64
import hashlib
import http.client
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imagematrix.model import secrets

# --- the cap (bytes) and the deadline (seconds, for the whole request: connection, headers and body) of each kind
# of read. Tests patch them in-process to keep a slow server's test short.
PAGE_LIMIT = 32 << 20  # an index's simple page (PyPI's JSON page of torch, the largest watched: about 1 MiB)
PAGE_DEADLINE = 60.0
MANIFEST_LIMIT = 4 << 20  # a registry manifest or image config (registries refuse manifests over 4 MiB)
MANIFEST_DEADLINE = 60.0
TOKEN_LIMIT = 1 << 20  # a registry token answer: a small JSON object (Docker Hub's: about 4 KiB)
TOKEN_DEADLINE = 20.0
RANGE_DEADLINE = 60.0  # one HEAD or byte-range read of a wheel (its cap: the range asked for)
MEMBER_LIMIT = 16 << 20  # a file read out of a wheel by ranges, inflated (vLLM's METADATA: about 10 KiB)
WHEEL_READ_LIMIT = 32 << 20  # all the ranges read from one wheel for that file (central directory included)
WHEEL_LIMIT = 2 << 30  # a downloaded flash-attn wheel (about 250 MB)
DOWNLOAD_DEADLINE = 1800.0  # a whole downloaded file
HEAD_DEADLINE = 30.0  # a HEAD that says whether a URL is there
PROBE_DEADLINE = 2.0  # the embedded registry's /v2/ on loopback
BLOB_LIMIT = 32 << 30  # one image layer streamed from a registry (the largest here: 2.8 GB gzip, 4.7 GB unpacked)
BLOB_DEADLINE = 3600.0  # one whole layer, read while its files are scanned (stages/coverage_image)
BLOB_IDLE = 120.0


class Refused(Exception):
    """An answer fetch does not take: a URL that is not http(s), a redirect leaving http(s) or going from https to
    http, an answer over the size cap, or one that did not arrive within the deadline. The message says which
    (credentials redacted); the caller names the server."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes  # b"" when a sink took it


def request(url: str, method: str = "GET") -> urllib.request.Request:
    """A request for url with its userinfo moved into a Basic Authorization header that is never re-sent to the
    host a redirect points at (urllib forwards ordinary headers across hosts). Raises ValueError for a URL that
    cannot be split (a bad IPv6 form)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:  # its message quotes the netloc, userinfo included
        raise ValueError(f"not a URL ({secrets.redact_userinfo_of(url, str(exc))})") from None
    # the host as written (an IPv6 address keeps its brackets, a port its text: http.client checks it)
    request = urllib.request.Request(urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])),
                                     method=method)
    if parts.username is not None:
        token = base64.b64encode(f"{urllib.parse.unquote(parts.username)}:"
                                 f"{urllib.parse.unquote(parts.password or '')}".encode()).decode()
        request.add_unredirected_header("Authorization", f"Basic {token}")
    return request


class _SafeRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects followed only to http(s), and never from https down to http (ftp, file and data are not)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        old, new = urllib.parse.urlsplit(req.full_url).scheme.lower(), urllib.parse.urlsplit(newurl).scheme.lower()
        if new != old and (new, old) != ("https", "http"):
            fp.close()
            raise Refused(f"redirected ({code}) from {old} to {new or 'no scheme'} "
                          f"({secrets.redact_text(repr(newurl[:200]))}): not followed")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _Watch:
    """The deadline of one request: when it passes, the request's sockets are shut down, which wakes a read that
    blocks on them (a server dripping a byte every few seconds never lets the per-read timeout expire)."""

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(deadline, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Watch:
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()

    def add(self, sock):
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                self._shut(sock)
        return sock

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                self._shut(sock)

    @staticmethod
    def _shut(sock) -> None:
        try:  # socket.socket's own shutdown: a TLS socket's would unwrap it under the reading thread
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except (OSError, TypeError):  # closed already
            pass

    def connection(self, base: type[http.client.HTTPConnection]) -> Callable[..., http.client.HTTPConnection]:
        """A factory of `base` connections whose sockets (the TCP one, then its TLS wrapping) are watched."""

        def make(host, **kwargs):
            conn = base(host, **kwargs)
            create, connect = conn._create_connection, conn.connect
            conn._create_connection = lambda *a, **k: self.add(create(*a, **k))

            def watched_connect():
                connect()
                self.add(conn.sock)

            conn.connect = watched_connect
            return conn

        return make


class _HTTP(urllib.request.HTTPHandler):
    def __init__(self, watch: _Watch):
        super().__init__()
        self.watch = watch

    def http_open(self, req):
        return self.do_open(self.watch.connection(http.client.HTTPConnection), req)


class _HTTPS(urllib.request.HTTPSHandler):
    def __init__(self, watch: _Watch, context: ssl.SSLContext | None):
        super().__init__(context=context)
        self.watch = watch

    def https_open(self, req):
        return self.do_open(self.watch.connection(http.client.HTTPSConnection), req, context=self._context)


def _opener(watch: _Watch, context: ssl.SSLContext | None) -> urllib.request.OpenerDirector:
    """HTTP and HTTPS only (no file:, ftp: nor data: handler at all), proxies from the environment as urlopen."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.UnknownHandler(), _HTTP(watch),
                    _HTTPS(watch, context), urllib.request.HTTPDefaultErrorHandler(), _SafeRedirects(),
                    urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener


def size_text(limit: int) -> str:
    if limit >= 1 << 30 and not limit % (1 << 30):
        return f"{limit >> 30} GiB"
    return f"{limit >> 20} MiB" if limit >= 1 << 20 and not limit % (1 << 20) else f"{limit} bytes"


def fetch(request: urllib.request.Request, *, limit: int, deadline: float, context: ssl.SSLContext | None = None,
          idle: float | None = None, sink: Callable[[bytes], object] | None = None) -> Answer:
    """The answer to an http(s) request: its body at most `limit` bytes (given to `sink` chunk by chunk instead of
    kept, when given), the whole request (connecting, redirects, headers, body) within `deadline` seconds, each
    wait on the network within `idle` seconds (default: the deadline). Redirects are followed to http(s) only,
    never from https to http.

    Raises Refused (see there), urllib.error.HTTPError for an error status, OSError when unreachable or when the
    answer is broken (a garbled status line, a body shorter than its Content-Length), ValueError for a URL or a
    header that http.client refuses (a bad port, a CR/LF in a header value)."""
    scheme = urllib.parse.urlsplit(request.full_url).scheme.lower()
    if scheme not in ("http", "https"):
        raise Refused(f"{scheme or 'no scheme'} is not http(s)")
    late = f"its answer did not arrive within {deadline:g} s"
    quiet = late if idle is None or idle >= deadline else f"it sent nothing for {idle:g} s"
    started = time.monotonic()
    body = bytearray()
    try:
        with _Watch(deadline) as watch:
            try:
                with _opener(watch, context).open(request, timeout=min(idle or deadline, deadline)) as response:
                    length = response.headers.get("Content-Length", "").strip()
                    if length.isdigit() and int(length) > limit and request.get_method() != "HEAD":
                        raise Refused(f"its answer of {int(length)} bytes is over the {size_text(limit)} limit")
                    got = 0
                    while chunk := response.read1(1 << 16):
                        got += len(chunk)
                        if got > limit:
                            raise Refused(f"its answer is over the {size_text(limit)} limit")
                        if time.monotonic() - started > deadline:
                            raise Refused(late)
                        if sink is None:
                            body += chunk
                        else:
                            sink(chunk)
                    if watch.expired:
                        raise Refused(late)
                    if response.length:  # what its Content-Length promised and never came
                        raise OSError(f"broken HTTP answer: it ended {response.length} bytes short of its "
                                      f"Content-Length")
                    return Answer(response.status, response.headers, bytes(body))
            except (OSError, http.client.HTTPException):
                if watch.expired:
                    raise Refused(late) from None
                raise
    except TimeoutError:
        raise Refused(quiet) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise Refused(quiet) from None
        raise
    except http.client.HTTPException as exc:  # IncompleteRead, a garbled status line: not OSErrors
        raise OSError(f"broken HTTP answer ({type(exc).__name__})") from None


def read_capped(request: urllib.request.Request, *, limit: int, deadline: float) -> bytes:
    """The body of fetch(request) (see there)."""
    return fetch(request, limit=limit, deadline=deadline).body


def why(exc: BaseException) -> str:
    """An exception of fetch in words, one line, credentials redacted."""
    if isinstance(exc, urllib.error.HTTPError):
        text = f"HTTP {exc.code} {exc.reason or ''}".strip()
    else:
        text = str(getattr(exc, "reason", None) or exc) or type(exc).__name__
    return " ".join(secrets.redact_text(text).split())


def download(url: str, dest: Path, *, limit: int, deadline: float = DOWNLOAD_DEADLINE,
             idle: float = 60) -> tuple[str | None, str | None]:
    """Fetch url into dest (written whole or not at all), at most `limit` bytes (what the file is for says how
    large it may be) within `deadline` seconds: (sha256, None), or (None, why not, credentials redacted)."""
    digest = hashlib.sha256()
    tmp = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shown = secrets.redact_url(url)
    try:
        with open(tmp, "wb") as out:
            def sink(chunk: bytes) -> None:
                digest.update(chunk)
                out.write(chunk)

            if urllib.parse.urlsplit(url).scheme.lower() == "file":  # a local mirror (--flash-attn-mirror file://)
                _copy_local(url, limit, sink)
            else:
                fetch(request(url), limit=limit, deadline=deadline, idle=idle, sink=sink)
    except urllib.error.HTTPError as exc:
        tmp.unlink(missing_ok=True)
        return None, f"{shown} answered HTTP {exc.code}"
    except Refused as exc:
        tmp.unlink(missing_ok=True)
        return None, f"{shown}: {exc}"
    except (OSError, ValueError) as exc:  # ValueError: a URL or header http.client refuses
        tmp.unlink(missing_ok=True)
        return None, f"{shown} is unreachable ({why(exc)})"
    tmp.replace(dest)
    return digest.hexdigest(), None


def _copy_local(url: str, limit: int, sink: Callable[[bytes], object]) -> None:
    """The file a file:// URL names, given to sink, at most `limit` bytes (Refused past it)."""
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise OSError(f"a file URL names a host ({parts.netloc})")
    got = 0
    with open(urllib.request.url2pathname(parts.path), "rb") as source:
        while chunk := source.read(1 << 20):
            got += len(chunk)
            if got > limit:
                raise Refused(f"the file is over the {size_text(limit)} limit")
            sink(chunk)


def check_reachable(url: str, deadline: float = HEAD_DEADLINE) -> str | None:
    """None when the wheel at url answers a HEAD (redirects followed), else why not (credentials redacted)."""
    try:
        fetch(request(url, "HEAD"), limit=0, deadline=deadline)
        return None
    except urllib.error.HTTPError as exc:
        return f"{secrets.redact_url(url)} answered HTTP {exc.code}"
    except Refused as exc:
        return f"{secrets.redact_url(url)}: {exc}"
    except (OSError, ValueError) as exc:
        return f"{secrets.redact_url(url)} is unreachable ({why(exc)})"
