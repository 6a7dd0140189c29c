"""Free loopback ports for servers the tests start."""

from __future__ import annotations

import random
import socket


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_pair(offset: int, low: int = 46600, high: int = 46999) -> int:
    """A port P with P and P+offset both free (the real SkyPilot server binds both)."""
    candidates = list(range(low, high))
    random.shuffle(candidates)
    for port in candidates:
        if port_is_free(port) and port_is_free(port + offset):
            return port
    raise RuntimeError(f"no free port pair in {low}-{high} (offset {offset})")
