"""The outermost layer: counts calls, delays responses, loses responses, breaks connections.

Lost responses (``drop_next_responses`` / ``drop_response_rate``) apply to ``POST /launch``,
``/down`` and ``/stop``: their route decides (``DROP_RESPONSE_KEY`` in the scope) when it accepts
the request, which is stored and runs normally (or, with ``late_commit_s``, only that much
later); then, instead of the response, the TCP connection is aborted:
this layer sits directly on uvicorn's ``send``, which is a bound method of uvicorn's
per-request cycle, and that cycle holds the connection's asyncio transport. The client sees
the connection close with no HTTP response at all (httpx: RemoteProtocolError) at once.
Under a server without such a transport (another ASGI server, an in-process test transport)
the layer instead sends nothing and waits, up to 120 s, for the client to give up.

After a text/plain 500 (a crash in the real server's middleware) the real server resets the
next request on the same keep-alive connection (contract §12); this layer does the same with a
TCP reset, so clients learn to reconnect after a crash.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import weakref

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from devtools.skypilot_sim.state import SimState

log = logging.getLogger(__name__)

# Set True in the scope by a route whose accepted request's response is to be lost.
DROP_RESPONSE_KEY = "sim.drop_response"
# /sim/* control calls are not counted: they are not SkyPilot traffic. Model probes are.
_CONTROL_PREFIXES = (
    "/sim/counters",
    "/sim/faults",
    "/sim/reset",
    "/sim/clusters",
    "/sim/timeline",
    "/sim/history",
    "/sim/timings",
)
_HANG_LIMIT_S = 120.0
_ABORT_LIMIT_S = 5.0


# Connections whose next request is to be reset (they carried a simulated crash).
_poisoned: weakref.WeakSet[asyncio.Transport] = weakref.WeakSet()


def _transport_of(send: Send) -> asyncio.Transport | None:
    """The connection behind uvicorn's ``send`` (a bound method of its request cycle)."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    return transport if isinstance(transport, asyncio.Transport) else None


def _abort_connection(send: Send) -> bool:
    """Abort the TCP connection behind uvicorn's ``send``; False if there is none to abort."""
    transport = _transport_of(send)
    if transport is None:
        return False
    transport.abort()
    return True


def _reset_connection(transport: asyncio.Transport) -> None:
    """Close with a TCP RST (SO_LINGER 0), which the client reads as 'connection reset'."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _wait_for_disconnect(receive: Receive, limit_s: float) -> None:
    try:
        async with asyncio.timeout(limit_s):
            while (await receive())["type"] != "http.disconnect":
                pass
    except TimeoutError:
        log.warning("client kept a connection the simulator broke open for %.0fs", limit_s)


async def deliver(
    app: ASGIApp, state: SimState, scope: Scope, receive: Receive, send: Send
) -> None:
    """Run ``app`` for one HTTP call with the counting, slowing and dropping faults applied."""
    method, path = str(scope["method"]), str(scope["path"])
    if not path.startswith(_CONTROL_PREFIXES):
        state.count_call(method, path)
    transport = _transport_of(send)
    if transport is not None and transport in _poisoned:
        _poisoned.discard(transport)
        log.info("resetting the connection of %s %s after a crash on it", method, path)
        _reset_connection(transport)
        await _wait_for_disconnect(receive, _ABORT_LIMIT_S)
        return
    slowable = path != "/api/health" and not path.startswith("/sim/")
    dropped = False
    aborted = False

    async def shaped_send(message: Message) -> None:
        nonlocal dropped, aborted
        if message["type"] == "http.response.start":
            if message["status"] == 200 and scope.get(DROP_RESPONSE_KEY) is True:
                dropped = True
                aborted = _abort_connection(send)
                log.info("dropping the response to %s %s", method, path)
            elif slowable and state.faults.slow_response_s > 0:
                await asyncio.sleep(state.faults.slow_response_s)
        if not dropped:
            await send(message)

    try:
        await app(scope, receive, shaped_send)
    except Exception:
        # Starlette's debug error handler has already answered with a text/plain 500 (a
        # simulated middleware crash) and re-raises only so that servers can log it.
        log.debug("simulated server crash on %s %s", method, path, exc_info=True)
        if transport is not None:
            _poisoned.add(transport)
    if dropped:
        await _wait_for_disconnect(receive, _ABORT_LIMIT_S if aborted else _HANG_LIMIT_S)
