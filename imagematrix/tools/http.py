"""Plain HTTP(S) to a URL that may carry credentials: is it fetchable, and the URL safe to print."""

from __future__ import annotations

import base64
import urllib.error
import urllib.parse
import urllib.request

from imagematrix.model import secrets


def check_reachable(url: str, timeout: float = 15) -> str | None:
    """None when the wheel at url answers a HEAD (redirects followed), else why not (credentials redacted)."""
    parts = urllib.parse.urlsplit(url)
    request = urllib.request.Request(urllib.parse.urlunsplit(parts._replace(netloc=parts.hostname + (
        f":{parts.port}" if parts.port else ""))), method="HEAD")
    if parts.username is not None:
        token = base64.b64encode(f"{urllib.parse.unquote(parts.username)}:"
                                 f"{urllib.parse.unquote(parts.password or '')}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return None
    except urllib.error.HTTPError as exc:
        return f"{secrets.redact_url(url)} answered HTTP {exc.code}"
    except OSError as exc:
        return f"{secrets.redact_url(url)} is unreachable ({getattr(exc, 'reason', exc)})"

