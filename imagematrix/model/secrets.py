"""What must never be printed: the one redaction every output path uses (console, logs, build-logs/, manifests,
error messages). URL userinfo becomes ***; a variable whose name holds a secret word shows only that it is set, and
its value (this process's environment) becomes *** wherever free text quotes it.

imagematrix/in_image/probe.py runs alone inside images and carries its own copy of these rules (a test keeps the
two in step)."""

from __future__ import annotations

import os
import re
import urllib.parse

# PASS covers PASSWORD and PASSWD; KEY covers API_KEY, ACCESS_KEY...
SECRET_WORDS = ("PASS", "TOKEN", "KEY", "SECRET", "AUTH", "CREDENTIAL", "COOKIE")
# the userinfo of a URL that urllib cannot split: everything before the last @ of its authority
_LOOSE_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s'\"]+)@")


def is_secret_name(name: str) -> bool:
    return any(word in name.upper() for word in SECRET_WORDS)


def redact_url(url: str) -> str:
    """The URL without user and password. Total: a URL urllib cannot split (a bad port, a broken IPv6 form) is
    redacted all the same, for this runs in error handlers, where a second exception would hide the first."""
    try:
        parts = urllib.parse.urlsplit(str(url))
    except ValueError:  # "Invalid IPv6 URL", a netloc that NFKC-normalizes into / ? # @ :
        return _LOOSE_USERINFO.sub(r"\g<scheme>***@", str(url))
    if "@" not in parts.netloc:
        return str(url)
    # the host and port as written after the userinfo (an IPv6 address keeps its brackets, a bad port its text)
    return urllib.parse.urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


def redact_userinfo_of(url: str, text: str) -> str:
    """text (an exception's message about url: urllib's quotes the netloc whole) without url's userinfo."""
    authority = str(url).partition("://")[2].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    userinfo = authority.rpartition("@")[0]
    for value in sorted({userinfo, urllib.parse.unquote(userinfo)} - {""}, key=len, reverse=True):
        text = text.replace(value, "***")
    return redact_text(text)


def secret_values(env: dict[str, str] | None = None) -> list[str]:
    """The values of this process's secret-named variables that free text must never show, longest first: those of
    8 characters or more that are not paths (SSH_AUTH_SOCK, GOOGLE_APPLICATION_CREDENTIALS name files, not secrets)."""
    env = os.environ if env is None else env
    found = {v for k, v in env.items() if is_secret_name(k) and len(v) >= 8 and not v.startswith(("/", "~"))}
    return sorted(found, key=len, reverse=True)


def redact_text(text: str) -> str:
    """Free text (a tool's output, an error) with the userinfo of every URL in it replaced by ***, and so is the
    value of every secret-named variable of this process (HF_TOKEN=... echoed by a build step, a password in a
    message)."""
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}***@", text)
    for value in secret_values():
        text = text.replace(value, "***")
    return text


def redact_env(env: dict[str, str]) -> dict[str, str]:
    """Secret-named variables as <set>; URL userinfo in every other value redacted."""
    return {k: ("<set>" if is_secret_name(k) else redact_text(v)) for k, v in env.items()}


def redact_assignments(items: list[str]) -> list[str]:
    """NAME=value strings (a container's Env) redacted as redact_env does."""
    out = []
    for item in items:
        name, sep, value = item.partition("=")
        out.append(f"{name}{sep}<set>" if sep and is_secret_name(name) else redact_text(item))
    return out


def redact_json(value):
    """A JSON-like value (labels, a tool's report) with the URL userinfo in every string replaced by ***."""
    if isinstance(value, dict):
        return {k: redact_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_json(v) for v in value]
    return redact_text(value) if isinstance(value, str) else value
