"""Go-style durations ("10m", "30s", "1h30m", "250ms"), as the integration guide's variables use."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")

DURATION_HELP = 'a Go duration such as "30s", "10m" or "1h30m" (units: ns, us, ms, s, m, h)'


def parse_duration(text: str) -> timedelta:
    """Parse a Go duration string; raise ValueError naming the accepted form otherwise."""
    raw = text.strip()
    if raw in ("0", ""):
        if raw == "":
            raise ValueError(f"empty duration; expected {DURATION_HELP}")
        return timedelta(0)
    sign = -1.0 if raw.startswith("-") else 1.0
    body = raw.lstrip("+-")
    pos = 0
    seconds = 0.0
    while pos < len(body):
        match = _PART.match(body, pos)
        if match is None:
            raise ValueError(f"{text!r} is not a duration; expected {DURATION_HELP}")
        seconds += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos == 0:
        raise ValueError(f"{text!r} is not a duration; expected {DURATION_HELP}")
    return timedelta(seconds=sign * seconds)


def format_duration(value: timedelta) -> str:
    """Render a timedelta the way Go would, for messages and docs ("1h30m0s" style, trimmed)."""
    total = value.total_seconds()
    if total == 0:
        return "0s"
    sign = "-" if total < 0 else ""
    total = abs(total)
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    out = ""
    if hours:
        out += f"{int(hours)}h"
    if minutes:
        out += f"{int(minutes)}m"
    if seconds or not out:
        out += f"{seconds:g}s"
    return sign + out
