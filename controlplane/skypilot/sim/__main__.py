"""``skypilot-sim``: run the SkyPilot API server simulator until SIGINT or SIGTERM.

Prints one line, ``skypilot simulator listening on http://HOST:PORT``, once it accepts
connections, so scripts can wait for it; exits 0 after a signal.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from types import FrameType

from controlplane.skypilot.sim.config import Faults, SimConfig
from controlplane.skypilot.sim.server import SimulatorServer


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
        "--token",
        action="append",
        default=[],
        dest="tokens",
        help="a valid service-account token (sky_...); repeat for more",
    )
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
        service_account_tokens=args.tokens,
        require_auth=args.require_auth,
        server_user_hash=args.user_hash,
        long_workers=args.long_workers,
        tcp_nodelay=args.tcp_nodelay,
        faults=faults,
    )


def main() -> None:
    args = _parser().parse_args()
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
