"""``python -m controlplane.db migrate|check``: bring the schema to head, or verify it is there.

Reads DATABASE_URL through controlplane.config. Exit codes: 0 done / at head, 1 database
problem or not at head, 2 configuration problem.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from alembic.util import CommandError

from controlplane.config import ConfigError, load_settings
from controlplane.db import migrate
from controlplane.db.errors import DATABASE_ERRORS, summarize_database_error
from controlplane.db.url import EXPECTED, normalise_database_url, redact_database_url
from controlplane.urls import scrub

MIGRATION_ERRORS: tuple[type[BaseException], ...] = (*DATABASE_ERRORS, CommandError)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m controlplane.db", description="Manage the control plane's database."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="upgrade the database at DATABASE_URL to head")
    commands.add_parser("check", help="exit 1 unless the database is at head and matches schema.py")
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if not settings.database_url:
        print(f"DATABASE_URL is not set; expected {EXPECTED}", file=sys.stderr)
        return 2
    url = settings.database_url
    try:
        normalise_database_url(url)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    shown = redact_database_url(url)
    try:
        if args.command == "migrate":
            before = migrate.status(url).current
            migrate.upgrade(url)
            after = migrate.status(url)
            if before == after.current:
                print(f"{shown}: already at head {after.head}; nothing to do")
            else:
                was = ", ".join(before) or "an empty database"
                print(f"{shown}: migrated from {was} to {', '.join(after.current)}")
            return 0
        result = migrate.status(url)
        print(f"{shown}: {result.describe()}", file=sys.stdout if result.ok else sys.stderr)
        return 0 if result.ok else 1
    except MIGRATION_ERRORS as exc:
        problem = scrub(summarize_database_error(exc), url)
        print(f"{shown}: {args.command} failed: {problem}", file=sys.stderr)
        return 1


def main() -> None:
    raise SystemExit(run())


if __name__ == "__main__":
    main()
