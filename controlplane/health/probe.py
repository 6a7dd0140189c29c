"""One liveness probe of a serving node's model: its health path, and optionally /v1/models.

vLLM's /health can answer 200 before the weights are loaded, so with ``check_models`` a probe
also asks /v1/models and passes only when the node's model id is listed there.

A probe's timeout runs on the prober's own event loop, so it measures the prober as well as the
model: ``LoopLag`` measures how late that loop ran while a round of probes was in flight.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from types import TracebackType

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


class LoopLag:
    """How late this event loop ran, at worst, while the ``async with`` body ran.

    A timer is due every ``period_s``; each firing's lateness is a sample, and on exit so is the
    pending timer's if it is already overdue (a loop blocked until the end still shows). On a
    starved worker (CPU, a blocking call) the samples grow, and so does every probe's time to
    notice an answer: its timeout fires on the same loop.
    """

    def __init__(self, period_s: float = 0.1) -> None:
        self.period_s = period_s
        self.worst_s = 0.0
        self._due = 0.0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LoopLag:
        loop = asyncio.get_running_loop()
        self._due = loop.time() + self.period_s
        self._task = asyncio.create_task(self._sample(loop))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.worst_s = max(self.worst_s, asyncio.get_running_loop().time() - self._due)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _sample(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            await asyncio.sleep(max(0.0, self._due - loop.time()))
            self.worst_s = max(self.worst_s, loop.time() - self._due)
            self._due = loop.time() + self.period_s
