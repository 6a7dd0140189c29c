"""One place that turns DATABASE_URL into the URL the async engine needs.

People and platforms write ``postgres://`` or ``postgresql://``; SQLAlchemy's asyncio engine
needs ``postgresql+asyncpg://``. Errors name the variable but never repeat the URL, which may
carry a user and password.
"""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from controlplane.urls import redact_url

ASYNC_DRIVER = "postgresql+asyncpg"
_ACCEPTED = ("postgres", "postgresql", ASYNC_DRIVER)
EXPECTED = "postgresql://user:password@host:5432/dbname"


def normalise_database_url(url: str) -> str:
    """Return ``url`` with the asyncpg driver; ValueError naming DATABASE_URL otherwise."""
    return _parse(url).render_as_string(hide_password=False)


def redact_database_url(url: str) -> str:
    """The URL without its user or password, for messages and logs."""
    try:
        return redact_url(_parse(url).render_as_string(hide_password=False))
    except ValueError:
        return "<invalid DATABASE_URL>"


def _parse(url: str) -> URL:
    text = url.strip()
    if not text:
        raise ValueError(f"DATABASE_URL is empty; expected {EXPECTED}")
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme not in _ACCEPTED:
        shown = f"scheme {scheme!r}" if scheme else "no scheme"
        raise ValueError(
            f"DATABASE_URL has {shown}; expected a PostgreSQL URL such as {EXPECTED} "
            "(postgres://, postgresql:// and postgresql+asyncpg:// are accepted)"
        )
    try:
        parsed = make_url(ASYNC_DRIVER + text[len(scheme) :])
    except ArgumentError:
        raise ValueError(f"DATABASE_URL is not a valid URL; expected {EXPECTED}") from None
    # libpq's sslmode means asyncpg's ssl (same values: disable, require, verify-full...).
    if "sslmode" in parsed.query and "ssl" not in parsed.query:
        mode = parsed.query["sslmode"]
        parsed = parsed.difference_update_query(["sslmode"]).update_query_dict({"ssl": mode})
    return parsed
