"""Logging set-up with a last line of defence: any known secret value is masked in every record.

Code never logs secrets on purpose; the redactor catches the accident (an exception message from
a library that echoed a header, say) before it reaches a handler.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

MASK = "***"


class SecretRedactor(logging.Filter):
    """Replaces registered secret values in a record's message and arguments."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()

    def add(self, values: Iterable[str]) -> None:
        # Short strings would mask ordinary words; real tokens and keys are long.
        self._secrets.update(v for v in values if v and len(v) >= 6)

    def scrub(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        scrubbed = self.scrub(message)
        if record.exc_info and record.exc_info[1] is not None:
            formatted = logging.Formatter().formatException(record.exc_info)
            record.exc_text = self.scrub(formatted)
        if scrubbed != message:
            record.msg = scrubbed
            record.args = None
        return True


REDACTOR = SecretRedactor()
_HANDLER_NAME = "controlplane"


def configure_logging(level: str = "INFO", secrets: Iterable[str] = ()) -> None:
    """Plain, greppable lines on stderr; every handler passes through the redactor."""
    REDACTOR.add(secrets)
    root = logging.getLogger()
    root.setLevel(level)
    if not any(h.get_name() == _HANDLER_NAME for h in root.handlers):
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.set_name(_HANDLER_NAME)  # installed once, however often this is called
        root.addHandler(handler)
    for handler in root.handlers:
        if REDACTOR not in handler.filters:
            handler.addFilter(REDACTOR)
    # httpx logs every request line at INFO; keep it at WARNING unless debugging.
    logging.getLogger("httpx").setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
