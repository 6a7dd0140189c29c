"""Fleet health's pure rules: a probe's outcome, the verdict it leads to, the sweep's suspects,
and the admission budget's key and polling."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from controlplane.admission import budget_key, poll_interval_s, waiter_ttl
from controlplane.config import load_settings
from controlplane.health.probe import (
    BAD_STATUS,
    MODEL_NOT_LISTED,
    TIMEOUT,
    UNREACHABLE,
    endpoint_url,
    probe_model,
)
from controlplane.health.sweep import Serving, suspects
from controlplane.health.verdict import Judgement, judge
from controlplane.lifecycle import LaunchMode, NodeStatus
from controlplane.skypilot.models import ClusterStatus
from controlplane.skypilot.probe import health_url

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LONG_AGO = NOW - timedelta(hours=1)


def verdict(ok: bool, status: NodeStatus, so_far: int, ready_at: datetime = LONG_AGO) -> Judgement:
    return judge(
        ok=ok,
        status=status,
        failures_so_far=so_far,
        threshold=3,
        ready_at=ready_at,
        now=NOW,
        startup_grace=timedelta(minutes=2),
    )


def test_failures_make_a_running_node_unhealthy_only_at_the_threshold() -> None:
    assert verdict(False, NodeStatus.RUNNING, 0) == judge_result(1, None)
    assert verdict(False, NodeStatus.RUNNING, 1) == judge_result(2, None)
    assert verdict(False, NodeStatus.RUNNING, 2) == judge_result(3, False)
    # Already unhealthy: keep counting, say nothing new.
    assert verdict(False, NodeStatus.UNHEALTHY, 3) == judge_result(4, None)


def test_one_success_resets_the_count_and_heals_an_unhealthy_node() -> None:
    assert verdict(True, NodeStatus.RUNNING, 2) == judge_result(0, None)
    assert verdict(True, NodeStatus.UNHEALTHY, 7) == judge_result(0, True)


def test_failures_in_the_startup_grace_do_not_count() -> None:
    just_ready = NOW - timedelta(seconds=30)
    assert verdict(False, NodeStatus.RUNNING, 2, ready_at=just_ready) == judge_result(2, None)


def judge_result(failures: int, tell: bool | None) -> Judgement:
    return Judgement(failures, tell)


def transport(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def test_endpoint_urls() -> None:
    assert endpoint_url("10.0.0.1:8000", "/health") == "http://10.0.0.1:8000/health"
    assert endpoint_url("https://h/x/", "ping") == "https://h/x/ping"
    assert health_url("h:1") == "http://h:1/health"


async def test_probe_outcomes_name_what_went_wrong() -> None:
    def answer(status: int) -> Callable[[httpx.Request], httpx.Response]:
        return lambda request: httpx.Response(status, json={})

    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with transport(answer(200)) as http:
        assert (await probe_model(http, "h:1", path="/health", timeout=1)).ok
    async with transport(answer(503)) as http:
        outcome = await probe_model(http, "h:1", path="/health", timeout=1)
        assert (outcome.ok, outcome.reason) == (False, BAD_STATUS)
        assert outcome.detail == "GET http://h:1/health: HTTP 503"
    async with transport(timeout) as http:
        outcome = await probe_model(http, "h:1", path="/live", timeout=0.5)
        assert (outcome.ok, outcome.reason) == (False, TIMEOUT)
        assert "http://h:1/live" in (outcome.detail or "")
    async with transport(refused) as http:
        assert (await probe_model(http, "h:1", path="/health", timeout=1)).reason == UNREACHABLE


@pytest.mark.parametrize(
    ("listed", "ok"), [(["org/model"], True), (["other/model"], False), ([], False)]
)
async def test_the_models_check_needs_the_nodes_model_listed(listed: list[str], ok: bool) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": m} for m in listed]})
        return httpx.Response(200, json={"status": "ok"})  # /health answers early

    async with transport(handler) as http:
        outcome = await probe_model(http, "h:1", path="/health", timeout=1, model_id="org/model")
    assert outcome.ok is ok
    if not ok:
        assert outcome.reason == MODEL_NOT_LISTED
        assert "'org/model' not among" in (outcome.detail or "")


def test_the_sweep_suspects_only_clusters_that_look_changed() -> None:
    nodes = [Serving(f"n{i}", f"cpn-c{i}", f"node-cpn-c{i}", "api") for i in range(5)]
    listed = {
        "cpn-c0": ClusterStatus.UP,
        "cpn-c1": ClusterStatus.STOPPED,
        "cpn-c2": ClusterStatus.INIT,
        "cpn-c3": ClusterStatus.AUTOSTOPPING,
    }  # cpn-c4 is absent
    found = {(n.node_id, status) for n, status in suspects(nodes, listed)}
    assert found == {
        ("n1", ClusterStatus.STOPPED),
        ("n2", ClusterStatus.INIT),
        ("n4", ClusterStatus.TERMINATED),
    }


def test_admission_budget_keys_and_polling() -> None:
    settings = load_settings({"SKYPILOT_API_SERVER_URL": "http://sky:46580"})
    assert budget_key(LaunchMode.API, settings) == "api:http://sky:46580"
    assert budget_key(LaunchMode.CLI, settings) == "cli:sky"
    assert poll_interval_s(0) == 0.5
    assert poll_interval_s(10_000) == 15.0
    # One worker's default 200 concurrent waiters ask Postgres about 60 times a second.
    assert sum(1 / poll_interval_s(ahead) for ahead in range(200)) < 65
    assert waiter_ttl(timedelta(seconds=10)) == timedelta(seconds=60)
    assert waiter_ttl(timedelta(minutes=1)) == timedelta(minutes=3)


def test_a_shard_of_hung_models_still_ends_within_its_budget() -> None:
    from activities.health import SHARD_BUDGET_S, probe_concurrency

    assert probe_concurrency(10, 5.0) == 64
    for nodes in (3_125, 10_000):
        concurrency = probe_concurrency(nodes, 5.0)
        assert math.ceil(nodes / concurrency) * 5.0 <= SHARD_BUDGET_S + 5.0
    assert probe_concurrency(10**6, 5.0) == 1024  # bounded: add shards (or workers) beyond


def test_a_plan_recorded_before_the_second_look_setting_still_parses() -> None:
    from controlplane.lifecycle import LOST_SECOND_LOOK_DEFAULT_S
    from workflows.models import NodePlan

    old = {
        "node_id": "n1",
        "cluster_name": "c1",
        "launch_mode": "api",
        "launch_timeout_s": 600,
        "terminate_timeout_s": 300,
        "health_interval_s": 60,
        "cleanup_budget_s": 1800,
        "heartbeat_timeout_s": 30,
        "max_retries": 3,
        "retry_backoff_s": 5,
    }
    assert NodePlan.model_validate(old).lost_second_look_s == LOST_SECOND_LOOK_DEFAULT_S
    assert load_settings({}).node_lost_second_look == timedelta(seconds=LOST_SECOND_LOOK_DEFAULT_S)


async def test_a_slow_answer_to_a_queued_launch_is_heartbeated_through() -> None:
    """Hundreds of waiters queue for the budget's advisory lock and the connection pool: a
    slow ask must not look like a dead worker (a heartbeat timeout fails the node)."""
    import asyncio

    from temporalio.testing import ActivityEnvironment

    from activities.admission import heartbeating

    beats: list[tuple[object, ...]] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details)

    async def slow_answer() -> int:
        await asyncio.sleep(0.35)
        return 7

    async def ask() -> int:
        return await heartbeating(slow_answer(), every_s=0.1, details=3)

    assert await env.run(ask) == 7
    assert len(beats) >= 2
    assert beats[0] == (3,)


def test_a_lease_retried_on_another_worker_ends_when_the_first_attempt_would_have() -> None:
    from activities.health import lease_left_s

    scheduled = datetime(2026, 1, 1, tzinfo=UTC)
    assert lease_left_s(scheduled, 600, scheduled + timedelta(seconds=100)) == 500
    assert lease_left_s(scheduled, 600, scheduled + timedelta(hours=1)) == 0  # over: no sweep
    # A server clock ahead of the worker's (the time-skipping server) cannot lengthen a lease.
    assert lease_left_s(scheduled, 600, scheduled - timedelta(hours=1)) == 600
