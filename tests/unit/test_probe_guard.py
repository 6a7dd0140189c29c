"""A prober that cannot run on time is not believed (issue 11's starved-worker finding).

The probe-shard activity with its database faked: a round where most probes go unanswered at
once, or whose event loop ran late, is suspect, and its unanswered probes do not count toward
MODEL_PROBE_THRESHOLD; answers (HTTP 503) and successes count in every round, and a few
failures among many, or every model of a small fleet crashing, are always believed.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from temporalio.testing import ActivityEnvironment

from activities.health import HealthActivities
from controlplane.config import ConfigError, load_settings
from controlplane.db.probes import ProbeRecord, ProbeTarget
from controlplane.health.verdict import CORRELATED, LOOP_LAG, RoundGuard, suspect_round
from controlplane.lifecycle import NodeStatus
from controlplane.metric_names import MODEL_PROBE_SUSPECT_ROUNDS
from controlplane.metrics import Metrics
from workflows.fleet_models import ProbeShardInput, ProbeShardResult

LONG_AGO = datetime.now(UTC) - timedelta(hours=1)
Handler = Callable[[httpx.Request], httpx.Response]


class FakeProbes:
    """The shard's targets, and what the activity records for them."""

    def __init__(self, targets: list[ProbeTarget]) -> None:
        self.targets = targets
        self.recorded: dict[str, ProbeRecord] = {}

    async def shard(self, shard: int, shards: int) -> list[ProbeTarget]:
        return self.targets

    async def record(self, records: list[ProbeRecord], at: datetime) -> None:
        self.recorded.update({r.node_id: r for r in records})


def target(
    host: str,
    status: NodeStatus = NodeStatus.RUNNING,
    failures: int = 0,
    ready_at: datetime = LONG_AGO,
) -> ProbeTarget:
    node_id = uuid.uuid4().hex
    return ProbeTarget(
        node_id=node_id,
        cluster_name=f"c-{host}",
        workflow_id=f"node-{node_id}",
        status=status.value,
        endpoint=f"{host}:8000",
        model="org/model",
        ready_at=ready_at,
        consecutive_failures=failures,
    )


def fleet(count: int, prefix: str) -> list[ProbeTarget]:
    return [target(f"{prefix}{i}") for i in range(count)]


def answers(
    *, hang: tuple[str, ...] = (), refuse: tuple[str, ...] = (), crash: tuple[str, ...] = ()
) -> Handler:
    """Hosts starting with a ``hang`` prefix time out, ``refuse`` refuse, ``crash`` answer 503."""

    def handler(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host.startswith(hang):
            raise httpx.ReadTimeout("no answer", request=request)
        if host.startswith(refuse):
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(503 if host.startswith(crash) else 200)

    return handler


async def probe_round(
    targets: list[ProbeTarget], handler: Handler, **env: str
) -> tuple[ProbeShardResult, FakeProbes, Metrics]:
    # Threshold 1: any failure that counts makes a running node unhealthy in this one round.
    settings = load_settings({"MODEL_PROBE_THRESHOLD": "1", **env})
    probes = FakeProbes(targets)
    metrics = Metrics()
    health = HealthActivities(
        {},
        None,  # type: ignore[arg-type]  # the probe shard never reads the node table
        probes,  # type: ignore[arg-type]
        settings,
        httpx.AsyncClient(transport=httpx.MockTransport(handler)),
        metrics,
    )
    result = await ActivityEnvironment().run(
        health.probe_model_shard, ProbeShardInput(shard=0, shards=1)
    )
    return result, probes, metrics


def told(result: ProbeShardResult, healthy: bool) -> set[str]:
    return {c.cluster_name for c in result.changed if c.signal.healthy is healthy}


def suspect_count(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value(MODEL_PROBE_SUSPECT_ROUNDS, {"reason": reason})
    return value or 0.0


def suspect_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.levelno == logging.WARNING and "suspect" in r.getMessage()
    ]


async def test_most_probes_timing_out_together_mark_nobody_unhealthy(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hung = fleet(40, "hung")
    refused = fleet(5, "refused")
    crashed = target("crashed")  # answers 503: the model's own verdict, counted all the same
    recovered = target("back", NodeStatus.UNHEALTHY, failures=4)  # answers 200: healed
    fine = fleet(3, "fine")
    caplog.set_level(logging.WARNING)
    result, probes, metrics = await probe_round(
        [*hung, *refused, crashed, recovered, *fine],
        answers(hang=("hung",), refuse=("refused",), crash=("crashed",)),
    )
    assert told(result, healthy=False) == {crashed.cluster_name}
    assert told(result, healthy=True) == {recovered.cluster_name}
    for node in (*hung, *refused):  # not counted: the count stays where it was
        assert probes.recorded[node.node_id].consecutive_failures == 0
        assert probes.recorded[node.node_id].last_error  # but the error is kept, for people
    assert probes.recorded[crashed.node_id].consecutive_failures == 1
    assert probes.recorded[recovered.node_id].consecutive_failures == 0
    assert result.failures == 46  # every failure is still reported
    assert suspect_count(metrics, CORRELATED) == 1
    (warning,) = suspect_warnings(caplog)  # once per round, with the numbers
    # The recovered node was failing already: it is not among the models answering until now.
    assert "45 of 49 answering models got no answer (50 probed)" in warning.getMessage()


@pytest.mark.parametrize(
    "handler",
    [answers(hang=("sick",)), answers(refuse=("sick",)), answers(crash=("sick",))],
    ids=["timeout", "refused", "503"],
)
async def test_a_few_failures_among_many_are_believed(
    handler: Handler, caplog: pytest.LogCaptureFixture
) -> None:
    sick = fleet(9, "sick")  # just below MODEL_PROBE_SUSPECT_MIN (10)
    caplog.set_level(logging.WARNING)
    result, probes, metrics = await probe_round([*sick, *fleet(91, "fine")], handler)
    assert told(result, healthy=False) == {n.cluster_name for n in sick}
    assert all(probes.recorded[n.node_id].consecutive_failures == 1 for n in sick)
    assert suspect_count(metrics, CORRELATED) == 0
    assert suspect_warnings(caplog) == []


async def test_a_new_crash_among_long_dead_models_is_believed() -> None:
    dead = [target(f"dead{i}", NodeStatus.UNHEALTHY, failures=9) for i in range(30)]
    new = target("newly")  # answered until now; the only model of the round to stop answering
    result, probes, _ = await probe_round(
        [*dead, new, *fleet(19, "fine")], answers(hang=("dead", "newly"))
    )
    assert told(result, healthy=False) == {new.cluster_name}
    assert probes.recorded[new.node_id].consecutive_failures == 1
    assert all(probes.recorded[n.node_id].consecutive_failures == 10 for n in dead)


async def test_a_new_crash_among_launches_still_loading_is_believed() -> None:
    loading = [target(f"loading{i}", ready_at=datetime.now(UTC)) for i in range(30)]
    new = target("newly")
    result, probes, _ = await probe_round(
        [*loading, new, *fleet(19, "fine")],
        answers(refuse=("loading", "newly")),
        MODEL_PROBE_STARTUP_GRACE="10m",
    )
    assert told(result, healthy=False) == {new.cluster_name}
    assert all(probes.recorded[n.node_id].consecutive_failures == 0 for n in loading)


async def test_every_model_of_a_small_fleet_hanging_is_believed() -> None:
    hung = fleet(3, "hung")
    result, _, _ = await probe_round(hung, answers(hang=("hung",)))
    assert told(result, healthy=False) == {n.cluster_name for n in hung}


async def test_every_model_answering_503_is_believed() -> None:
    crashed = fleet(50, "crashed")
    result, _, metrics = await probe_round(crashed, answers(crash=("crashed",)))
    assert told(result, healthy=False) == {n.cluster_name for n in crashed}
    assert suspect_count(metrics, CORRELATED) == 0


async def test_a_lagging_loop_makes_the_round_suspect(caplog: pytest.LogCaptureFixture) -> None:
    hung = fleet(2, "hung")  # too few to be correlated: only the lag makes the round suspect

    def blocking(request: httpx.Request) -> httpx.Response:
        time.sleep(0.3)  # a starved loop: nothing else on it runs meanwhile
        raise httpx.ReadTimeout("no answer", request=request)

    caplog.set_level(logging.WARNING)
    # The loop is at least 0.3 s minus the sampling period (0.1 s) late: well over 50 ms.
    result, probes, metrics = await probe_round(hung, blocking, MODEL_PROBE_MAX_LOOP_LAG="50ms")
    assert result.changed == []
    assert all(probes.recorded[n.node_id].consecutive_failures == 0 for n in hung)
    assert suspect_count(metrics, LOOP_LAG) == 1
    (warning,) = suspect_warnings(caplog)
    assert "loop_lag" in warning.getMessage()


def test_suspect_round_rules() -> None:
    guard = RoundGuard(max_loop_lag_s=1.0, suspect_fraction=0.5, suspect_min=10)

    def why(answering: int, stopped: int, lag: float = 0.0) -> str | None:
        return suspect_round(guard, answering=answering, stopped=stopped, loop_lag_s=lag)

    assert why(1000, 912) == CORRELATED  # the benchmark's starved round
    assert why(20, 10) is None  # half is not more than half
    assert why(20, 11) == CORRELATED
    assert why(9, 9) is None  # fewer than the minimum: believed
    assert why(250, 100) is None  # a rack of 100 hanging among 250: believed
    assert why(1, 0, lag=1.5) == LOOP_LAG
    assert why(1, 0, lag=1.0) is None


@pytest.mark.parametrize(
    "env",
    [
        {"MODEL_PROBE_SUSPECT_MIN": "1"},  # one crash would be "correlated"
        {"MODEL_PROBE_SUSPECT_FRACTION": "0"},
        {"MODEL_PROBE_SUSPECT_FRACTION": "1.5"},
        {"MODEL_PROBE_MAX_LOOP_LAG": "0s"},
    ],
)
def test_guard_settings_that_would_mask_a_real_crash_are_refused(env: dict[str, str]) -> None:
    (name,) = env
    with pytest.raises(ConfigError, match=name):
        load_settings(env)


def test_guard_defaults() -> None:
    settings = load_settings({})
    assert settings.model_probe_max_loop_lag == timedelta(seconds=1)
    assert settings.model_probe_suspect_fraction == 0.5
    assert settings.model_probe_suspect_min == 10


async def test_the_shards_of_one_worker_share_its_probe_slots() -> None:
    """Two shards probing at once in one worker never have more than its slots in flight, and
    every probe still answers: queued for a slot, not timed out."""
    in_flight = 0
    most = 0

    async def slow_answer(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return httpx.Response(200)

    settings = load_settings({"MODEL_PROBE_THRESHOLD": "1"})
    health = HealthActivities(
        {},
        None,  # type: ignore[arg-type]  # the probe shard never reads the node table
        FakeProbes(fleet(100, "m")),  # type: ignore[arg-type]  # both shards get these 100
        settings,
        httpx.AsyncClient(transport=httpx.MockTransport(slow_answer)),
        probes_in_flight=10,
    )
    rounds = await asyncio.gather(
        *(
            ActivityEnvironment().run(
                health.probe_model_shard, ProbeShardInput(shard=shard, shards=2)
            )
            for shard in range(2)
        )
    )
    assert [(r.probed, r.failures) for r in rounds] == [(100, 0), (100, 0)]
    assert most == 10  # each shard alone would have had 64 in flight (probe_concurrency)
