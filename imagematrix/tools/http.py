"""Plain HTTP(S) to a URL that may carry credentials: is it fetchable, and the URL safe to print."""

from __future__ import annotations

import base64
import hashlib
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

