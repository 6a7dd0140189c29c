"""`python -m starter events` (the feed as JSON lines) and `python -m starter usage` (GPU usage).

Both read Postgres (DATABASE_URL) only; neither needs Temporal.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from controlplane.config import ConfigError, Settings
from controlplane.db.engine import create_engine
from controlplane.db.errors import DATABASE_ERRORS, summarize_database_error
from controlplane.db.url import redact_database_url
from controlplane.events.usage import GroupBy, load_usage_inputs, summarise
from starter.feed import EventStream, event_type

COMMANDS = frozenset({"events", "usage"})
EXIT_INPUT = 2  # the starter's "bad input, nothing was done"


def _cursor(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a cursor; expected the `cursor` of a line printed earlier "
            "(an integer, 0 = from the start)"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a cursor is 0 or more")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number of at least 1")
    return value


def _event_type(text: str) -> str:
    try:
        return event_type(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time; expected e.g. 2026-01-31 or 2026-01-31T12:00:00Z"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def add_commands(sub: Any) -> None:
    """Add `events` and `usage` to the starter's subcommands."""
    events = sub.add_parser("events", help="node events in commit order, as JSON lines")
    events.add_argument(
        "--since", type=_cursor, default=0, metavar="CURSOR", help="after this cursor"
    )
    events.add_argument("--tenant")
    events.add_argument("--node", dest="node_id", metavar="NODE_ID")
    events.add_argument("--type", type=_event_type, help="e.g. ready or node.ready")
    events.add_argument("--follow", action="store_true", help="wait for new events (Ctrl-C)")
    events.add_argument("--limit", type=_positive, metavar="N", help="stop after N events")

    usage = sub.add_parser("usage", help="GPU-seconds and node-hours per tenant")
    usage.add_argument("--tenant")
    usage.add_argument(
        "--from", dest="start", type=_instant, metavar="ISO", help="start (UTC if no zone)"
    )
    usage.add_argument("--to", dest="end", type=_instant, metavar="ISO", help="end (default: now)")
    usage.add_argument("--by", choices=[g.value for g in GroupBy])


def _database_url(settings: Settings) -> str:
    if not settings.database_url:
        raise ConfigError(["DATABASE_URL: required to read events (postgresql://user@host/db)"])
    return settings.database_url


async def run(args: argparse.Namespace, settings: Settings) -> int:
    url = _database_url(settings)
    try:
        if args.command == "events":
            return await _events(args, url)
        return await _usage(args, url)
    except DATABASE_ERRORS as exc:
        raise ConnectionError(
            f"cannot read the database at DATABASE_URL={redact_database_url(url)}: "
            f"{summarize_database_error(exc)}"
        ) from None


async def _events(args: argparse.Namespace, url: str) -> int:
    async with EventStream(url) as stream:
        async for event in stream.events(
            args.since,
            tenant=args.tenant,
            node_id=args.node_id,
            type=args.type,
            follow=args.follow,
            limit=args.limit,
        ):
            print(event.model_dump_json(), flush=True)
    return 0


async def _usage(args: argparse.Namespace, url: str) -> int:
    end = args.end or datetime.now(UTC)
    if args.start is not None and args.start >= end:
        message = f"--from {args.start.isoformat()} is not before --to {end.isoformat()}"
        print(json.dumps({"error": message}), file=sys.stderr, flush=True)
        return EXIT_INPUT
    by = GroupBy(args.by) if args.by else None
    engine = create_engine(url, pool_size=1, max_overflow=0)
    try:
        inputs = await load_usage_inputs(engine, tenant=args.tenant, end=end)
    finally:
        await engine.dispose()
    rows = [row.as_dict(by) for row in summarise(inputs, start=args.start, end=end, by=by)]
    if sys.stdout.isatty():
        print(usage_table(rows))
    else:
        report = {
            "from": args.start.isoformat() if args.start else None,
            "to": end.isoformat(),
            "by": args.by,
            "rows": rows,
        }
        print(json.dumps(report, indent=2), flush=True)
    return 0


def usage_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no GPU usage in this window"
    headers = list(rows[0])
    cells = [[str(row[h]) for h in headers] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True)) for cell in cells]
    return "\n".join(lines)
