"""One liveness probe of a serving node's model: its health path, and optionally /v1/models.

vLLM's /health can answer 200 before the weights are loaded, so with ``check_models`` a probe
also asks /v1/models and passes only when the node's model id is listed there.

A probe's timeout runs on the prober's own event loop, so it measures the prober as well as the
model: ``measuring_loop_lag`` measures how late that loop ran while a round of probes was in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

# Low-cardinality reasons, the probe-failure counter's label values.
TIMEOUT = "timeout"
UNREACHABLE = "unreachable"
BAD_STATUS = "bad_status"
MODEL_NOT_LISTED = "model_not_listed"
REASONS = (TIMEOUT, UNREACHABLE, BAD_STATUS, MODEL_NOT_LISTED)
# No answer came back: the model, the network or a late prober may be at fault. The other
# reasons are answers, the model's own verdict, whatever state the prober is in.
NO_ANSWER = frozenset({TIMEOUT, UNREACHABLE})

# Probes in flight at once in one worker, and the connections its probe client keeps alive.
# Every shard this worker runs shares the cap: 16 shards of a 1,000-node fleet used to open 1,000
# new connections at once each interval (httpx keeps 20 alive by default), and the worker's event
# loop fell 1.8 s behind, so whole shards timed out unanswered. A probe takes its slot before its
# timeout starts.
MAX_PROBES_IN_FLIGHT = 256


def probe_client(in_flight: int = MAX_PROBES_IN_FLIGHT) -> httpx.AsyncClient:
    """The prober's HTTP client: a kept-alive connection for every probe slot."""
    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    )


@dataclass(frozen=True)
class ProbeOutcome:
    ok: bool
    reason: str | None = None  # one of REASONS when not ok
    detail: str | None = None  # for people: what was asked and what came back


def endpoint_url(endpoint: str, path: str) -> str:
    """SkyPilot's endpoints are "host:port" (sometimes with a scheme or path); add ``path``."""
    base = endpoint if "://" in endpoint else f"http://{endpoint}"
    return base.rstrip("/") + "/" + path.lstrip("/")


async def _get(http: httpx.AsyncClient, url: str, timeout: float) -> httpx.Response | ProbeOutcome:
    try:
        return await http.get(url, timeout=timeout)
    except httpx.TimeoutException:
        return ProbeOutcome(False, TIMEOUT, f"GET {url}: no answer within {timeout:g}s")
    except httpx.TransportError as exc:
        return ProbeOutcome(False, UNREACHABLE, f"GET {url}: {type(exc).__name__}")


async def probe_model(
    http: httpx.AsyncClient,
    endpoint: str,
    *,
    path: str,
    timeout: float,
    model_id: str | None = None,
) -> ProbeOutcome:
    """Healthy when ``path`` answers 200 (and, given ``model_id``, /v1/models lists it)."""
    url = endpoint_url(endpoint, path)
    answer = await _get(http, url, timeout)
    if isinstance(answer, ProbeOutcome):
        return answer
    if answer.status_code != 200:
        return ProbeOutcome(False, BAD_STATUS, f"GET {url}: HTTP {answer.status_code}")
    if model_id is None:
        return ProbeOutcome(True)
    models_url = endpoint_url(endpoint, "/v1/models")
    listed = await _get(http, models_url, timeout)
    if isinstance(listed, ProbeOutcome):
        return listed
    if listed.status_code != 200:
        return ProbeOutcome(False, BAD_STATUS, f"GET {models_url}: HTTP {listed.status_code}")
    try:
        ids = {str(item.get("id")) for item in listed.json().get("data", [])}
    except (ValueError, AttributeError, TypeError):
        ids = set()
    if model_id not in ids:
        return ProbeOutcome(
            False, MODEL_NOT_LISTED, f"GET {models_url}: {model_id!r} not among {sorted(ids)}"
        )
    return ProbeOutcome(True)


@dataclass
class LoopLag:
    """How late the event loop ran, at worst, in seconds: see ``measuring_loop_lag``."""

    worst_s: float = 0.0


@contextlib.asynccontextmanager
async def measuring_loop_lag(period_s: float = 0.1) -> AsyncIterator[LoopLag]:
    """How late this event loop runs while the ``async with`` body runs.

    A timer is due every ``period_s``; each firing's lateness is a sample, and on exit so is the
    pending timer's if it is already overdue (a loop blocked until the end still shows). On a
    starved worker (CPU, a blocking call) the samples grow, and so does every probe's time to
    notice an answer: its timeout fires on the same loop.
    """
    loop = asyncio.get_running_loop()
    lag = LoopLag()
    due = loop.time() + period_s

    async def sample() -> None:
        nonlocal due
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            lag.worst_s = max(lag.worst_s, loop.time() - due)
            due = loop.time() + period_s

    sampler = asyncio.create_task(sample())
    try:
        yield lag
    finally:
        lag.worst_s = max(lag.worst_s, loop.time() - due)
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
