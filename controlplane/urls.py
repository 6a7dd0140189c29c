"""URLs as they may be shown: without the user or password an address may carry.

SKYPILOT_API_SERVER_URL (basic auth in front of the API server), DATABASE_URL and
TEMPORAL_ADDRESS may all hold ``user:password@``. Configuration errors, start-up logs and
``starter health`` show addresses through :func:`redact_url`, and pass messages from libraries
(which may repeat the address, or name the database user) through :func:`scrub`.
"""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import parse_qsl, unquote

MASK = "***"
_CREDENTIAL_QUERY_KEYS = ("user", "password", "passwd", "token")


class Credentials(NamedTuple):
    user: str
    password: str


def _split(text: str) -> tuple[str, str, str]:
    """(scheme with '://' or '', userinfo or '', the rest). The last '@' ends the userinfo,
    so a raw '@', '/' or '?' in a password is still part of it."""
    scheme, separator, rest = text.strip().partition("://")
    if not separator:
        scheme, rest = "", text.strip()
    else:
        scheme += separator
    userinfo, at, location = rest.rpartition("@")
    return scheme, (userinfo if at else ""), location if at else rest


def redact_url(text: str) -> str:
    """``scheme://***@host:port/path``: userinfo masked; query and fragment dropped."""
    scheme, userinfo, location = _split(text)
    for mark in ("?", "#"):
        location = location.split(mark, 1)[0]
    return f"{scheme}{MASK + '@' if userinfo else ''}{location}"


def url_credentials(text: str | None) -> Credentials:
    """The user and password in ``text`` (userinfo, or libpq-style ?user=&password=)."""
    if not text:
        return Credentials("", "")
    _, userinfo, location = _split(text)
    user, _, password = userinfo.partition(":")
    query = dict(parse_qsl(location.partition("?")[2]))
    return Credentials(
        unquote(user) or query.get("user", ""), unquote(password) or query.get("password", "")
    )


def _sensitive_parts(url: str) -> list[str]:
    _, userinfo, location = _split(url)
    user, _, password = userinfo.partition(":")
    parts = [user, password, unquote(user), unquote(password)]
    query = location.partition("?")[2]
    parts += [value for key, value in parse_qsl(query) if key.lower() in _CREDENTIAL_QUERY_KEYS]
    return sorted({part for part in parts if part}, key=len, reverse=True)


def scrub(message: str, *urls: str | None) -> str:
    """``message`` with each of ``urls`` redacted and their users and passwords masked."""
    for url in urls:
        if not url:
            continue
        message = message.replace(url, redact_url(url))
        for part in _sensitive_parts(url):
            # Whole words only: a user "postgres" is masked, "postgresql://" is left alone.
            message = re.sub(rf"(?<![A-Za-z0-9_]){re.escape(part)}(?![A-Za-z0-9_])", MASK, message)
    return message
