"""Plain HTTP(S) to a URL that may carry credentials: is it fetchable, and the URL safe to print; and a small
answer read with a size cap and a deadline from a server that may be hostile (read_capped)."""

from __future__ import annotations

import base64
import hashlib
import http.client
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from imagematrix.model import secrets


def request(url: str, method: str = "GET") -> urllib.request.Request:
    """A request for url with its userinfo moved into a Basic Authorization header that is never re-sent to the
    host a redirect points at (urllib forwards ordinary headers across hosts)."""
    parts = urllib.parse.urlsplit(url)
    request = urllib.request.Request(urllib.parse.urlunsplit(parts._replace(netloc=(parts.hostname or "") + (
        f":{parts.port}" if parts.port else ""))), method=method)
    if parts.username is not None:
        token = base64.b64encode(f"{urllib.parse.unquote(parts.username)}:"
                                 f"{urllib.parse.unquote(parts.password or '')}".encode()).decode()
        request.add_unredirected_header("Authorization", f"Basic {token}")
    return request


def download(url: str, dest: Path, timeout: float = 60) -> tuple[str | None, str | None]:
    """Fetch url into dest (written whole or not at all): (sha256, None), or (None, why not, credentials redacted)."""
    digest = hashlib.sha256()
    tmp = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(request(url), timeout=timeout) as response, open(tmp, "wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except urllib.error.HTTPError as exc:
        tmp.unlink(missing_ok=True)
        return None, f"{secrets.redact_url(url)} answered HTTP {exc.code}"
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        return None, f"{secrets.redact_url(url)} is unreachable ({getattr(exc, 'reason', exc)})"
    tmp.replace(dest)
    return digest.hexdigest(), None


def check_reachable(url: str, timeout: float = 15) -> str | None:
    """None when the wheel at url answers a HEAD (redirects followed), else why not (credentials redacted)."""
    head = request(url, "HEAD")
    try:
        with urllib.request.urlopen(head, timeout=timeout):
            return None
    except urllib.error.HTTPError as exc:
        return f"{secrets.redact_url(url)} answered HTTP {exc.code}"
    except OSError as exc:
        return f"{secrets.redact_url(url)} is unreachable ({getattr(exc, 'reason', exc)})"



class Refused(Exception):
    """An answer read_capped does not take: a URL that is not http(s), a redirect to another scheme, an answer over
    the size cap or one that did not arrive within the deadline. The message says which (credentials redacted)."""


class _SameSchemeRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects followed only within the scheme of the request (https never becomes http, nor ftp or file)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        old, new = urllib.parse.urlsplit(req.full_url).scheme.lower(), urllib.parse.urlsplit(newurl).scheme.lower()
        if new != old:
            fp.close()
            raise Refused(f"redirected ({code}) from {old} to {new or 'no scheme'} "
                          f"({secrets.redact_text(repr(newurl[:200]))}): not followed")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener() -> urllib.request.OpenerDirector:
    """HTTP and HTTPS only (no file:, ftp: nor data: handler at all), proxies from the environment as urlopen."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.UnknownHandler(), urllib.request.HTTPHandler(),
                    urllib.request.HTTPSHandler(), urllib.request.HTTPDefaultErrorHandler(), _SameSchemeRedirects(),
                    urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener


def _size(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit >= 1 << 20 and not limit % (1 << 20) else f"{limit} bytes"


def read_capped(request: urllib.request.Request, *, limit: int, deadline: float) -> bytes:
    """The body of the answer to an http(s) request, at most `limit` bytes, redirects followed only within its
    scheme. `deadline` (seconds) bounds each wait on the network and the whole body is refused once reading it has
    taken longer (a server dripping bytes is cut off after about `deadline` seconds, never more than twice that).

    Raises Refused (see there), urllib.error.HTTPError for an error status, OSError when unreachable."""
    scheme = urllib.parse.urlsplit(request.full_url).scheme.lower()
    if scheme not in ("http", "https"):
        raise Refused(f"{scheme or 'no scheme'} is not http(s)")
    started = time.monotonic()
    try:
        with _opener().open(request, timeout=deadline) as response:
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > limit:
                raise Refused(f"its answer of {int(length)} bytes is over the {_size(limit)} limit")
            body = bytearray()
            while chunk := response.read1(1 << 16):
                body += chunk
                if len(body) > limit:
                    raise Refused(f"its answer is over the {_size(limit)} limit")
                if time.monotonic() - started > deadline:
                    raise Refused(f"its answer did not arrive within {deadline:g} s")
    except TimeoutError:
        raise Refused(f"its answer did not arrive within {deadline:g} s") from None
    except http.client.HTTPException as exc:  # IncompleteRead, a garbled status line: not OSErrors
        raise OSError(f"broken HTTP answer ({type(exc).__name__})") from None
    return bytes(body)
