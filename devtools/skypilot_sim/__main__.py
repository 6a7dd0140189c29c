"""``skypilot-sim``: run the SkyPilot API server simulator until SIGINT or SIGTERM.

Prints one line, ``skypilot simulator listening on http://HOST:PORT``, once it accepts
connections, so scripts can wait for it; exits 0 after a signal.

Service-account tokens come from SKYPILOT_SIM_TOKENS (comma-separated) or ``--token-file``
(one per line), never from the command line, where ``ps`` would show them to every user.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from devtools.skypilot_sim.config import Faults, SimConfig
from devtools.skypilot_sim.server import SimulatorServer

TOKENS_VARIABLE = "SKYPILOT_SIM_TOKENS"


def _parser() -> argparse.ArgumentParser:
    defaults = SimConfig()
    p = argparse.ArgumentParser(prog="skypilot-sim", description=__doc__)
    p.add_argument("--host", default=defaults.host, help="bind address (default %(default)s)")
    p.add_argument("--port", type=int, default=defaults.port, help="0 picks a free port")
    p.add_argument("--launch-delay", type=float, default=defaults.launch_delay_s, metavar="S")
    p.add_argument("--down-delay", type=float, default=defaults.down_delay_s, metavar="S")
    p.add_argument("--stop-delay", type=float, default=defaults.stop_delay_s, metavar="S")
    p.add_argument("--model-warmup", type=float, default=defaults.model_warmup_s, metavar="S")
    p.add_argument("--status-delay", type=float, default=defaults.status_delay_s, metavar="S")
    p.add_argument(
        "--token-file",
        type=Path,
        default=None,
        metavar="PATH",
        help=f"valid service-account tokens (sky_...), one per line; also {TOKENS_VARIABLE}",
    )
    # Refused with a message that does not repeat it (argparse would echo an unknown flag).
    p.add_argument("--token", dest="argv_tokens", action="append", help=argparse.SUPPRESS)
    p.add_argument("--require-auth", action="store_true", help="refuse calls without a token")
    p.add_argument("--user-hash", default=defaults.server_user_hash)
    p.add_argument("--long-workers", type=int, default=None, help="LONG-queue worker slots")
    p.add_argument(
        "--tcp-nodelay",
        action="store_true",
        help="no ~40 ms Nagle stall per call, like a real API server (benchmarks)",
    )
    p.add_argument(
        "--faults-json",
        default=None,
        metavar="JSON",
        help="initial faults, e.g. '{\"fail_next_launches\": 1}'",
    )
    p.add_argument("--log-level", default="WARNING")
    return p


def read_tokens(token_file: Path | None, environ: Mapping[str, str]) -> list[str]:
    """Tokens from SKYPILOT_SIM_TOKENS and the token file; errors never repeat a token."""
    tokens = [t.strip() for t in environ.get(TOKENS_VARIABLE, "").split(",") if t.strip()]
    if token_file is not None:
        try:
            text = token_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ValueError(f"cannot read --token-file {token_file}: {reason}") from None
        tokens += [line.strip() for line in text.splitlines() if line.strip()]
    return tokens


def _config(args: argparse.Namespace) -> SimConfig:
    faults = Faults.model_validate(json.loads(args.faults_json)) if args.faults_json else Faults()
    return SimConfig(
        host=args.host,
        port=args.port,
        launch_delay_s=args.launch_delay,
        down_delay_s=args.down_delay,
        stop_delay_s=args.stop_delay,
        model_warmup_s=args.model_warmup,
        status_delay_s=args.status_delay,
        service_account_tokens=read_tokens(args.token_file, os.environ),
        require_auth=args.require_auth,
        server_user_hash=args.user_hash,
        long_workers=args.long_workers,
        tcp_nodelay=args.tcp_nodelay,
        faults=faults,
    )


def main() -> None:
    args = _parser().parse_args()
    if args.argv_tokens:
        sys.exit(
            "skypilot-sim: --token is not accepted: a token on the command line is visible to "
            f"every user through ps; put tokens in {TOKENS_VARIABLE} (comma-separated) or in a "
            "file named by --token-file (one per line)"
        )
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s %(message)s")
    try:
        config = _config(args)
    except ValueError as exc:  # pydantic's ValidationError and bad JSON are both ValueErrors
        sys.exit(f"skypilot-sim: invalid settings: {exc}")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    server = SimulatorServer(config)
    try:
        server.start()
    except OSError as exc:
        sys.exit(f"skypilot-sim: cannot listen on {config.host}:{config.port}: {exc}")
    try:
        print(f"skypilot simulator listening on {server.url}", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
