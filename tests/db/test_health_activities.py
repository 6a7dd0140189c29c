"""The fleet-health activities on PostgreSQL, with SkyPilot and the models faked: one cluster
list for every node, a fresh look only at suspects, and probe counts carried between sweeps."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import ActivityEnvironment

from activities.health import HealthActivities
from controlplane import lifecycle
from controlplane.config import load_settings
from controlplane.db.probes import ProbeRepository
from controlplane.db.repository import NodeRepository
from controlplane.lifecycle import LaunchMode
from controlplane.metrics import Metrics
from controlplane.skypilot.models import ClusterRecord, ClusterStatus
from tests.support.nodes import serving_node
from workflows.fleet_models import ClusterSweepInput, ProbeShardInput


class FakeBackend:
    """Lists ``listed``; answers a fresh look from ``fresh`` (absent = TERMINATED)."""

    mode = LaunchMode.API

    def __init__(self, listed: dict[str, str], fresh: dict[str, ClusterStatus]) -> None:
        self.listed = listed
        self.fresh = fresh
        self.lists = 0
        self.looks: list[str] = []

    async def list_clusters(self) -> list[ClusterRecord]:
        self.lists += 1
        return [
            ClusterRecord.model_validate({"name": n, "status": s}) for n, s in self.listed.items()
        ]

    async def cluster_status(self, cluster_name: str, *, refresh: bool = False) -> ClusterStatus:
        self.looks.append(cluster_name)
        return self.fresh.get(cluster_name, ClusterStatus.TERMINATED)


async def serving(nodes: NodeRepository, endpoint: str = "m:1") -> tuple[str, str]:
    node = await serving_node(nodes, endpoint)
    return node.node_id, node.cluster_name


def activities(
    engine: AsyncEngine,
    backend: FakeBackend,
    handler: Callable[[httpx.Request], httpx.Response] | None = None,
) -> HealthActivities:
    settings = load_settings({"MODEL_PROBE_THRESHOLD": "2", "MODEL_PROBE_STARTUP_GRACE": "0s"})
    http = httpx.AsyncClient(
        transport=httpx.MockTransport(handler or (lambda r: httpx.Response(200)))
    )
    return HealthActivities(
        {LaunchMode.API: backend},  # type: ignore[dict-item]
        NodeRepository(engine),
        ProbeRepository(engine),
        settings,
        http,
        Metrics(),
    )


async def test_the_sweep_lists_once_and_looks_again_only_at_suspects(engine: AsyncEngine) -> None:
    nodes = NodeRepository(engine)
    (_, up), (_, stale), (gone_id, gone), (_, stopped) = [await serving(nodes) for _ in range(4)]
    backend = FakeBackend(
        listed={up: "UP", stopped: "STOPPED", "someone-elses-cluster": "UP"},
        fresh={up: ClusterStatus.UP, stale: ClusterStatus.UP, stopped: ClusterStatus.STOPPED},
    )
    health = activities(engine, backend)
    result = await ActivityEnvironment().run(health.sweep_clusters, ClusterSweepInput())
    assert backend.lists == 1
    mine = {up, stale, gone, stopped}
    assert {c for c in backend.looks if c in mine} == {stale, gone, stopped}  # never `up`
    changed = {c.cluster_name: c for c in result.changed if c.cluster_name in mine}
    assert set(changed) == {gone, stopped}  # the stale listing was not acted on
    assert changed[gone].cluster_status == "TERMINATED"
    assert changed[gone].workflow_id == f"node-{gone_id}"
    assert result.status_calls == 1 + len(backend.looks)


async def test_probe_shards_count_failures_across_sweeps_and_report_changes_only(
    engine: AsyncEngine,
) -> None:
    nodes = NodeRepository(engine)
    node_id, cluster = await serving(nodes, endpoint=f"sick-{uuid.uuid4().hex[:6]}:1")
    sick = {node_id}
    backend = FakeBackend({}, {})

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503 if request.url.host.startswith("sick") and sick else 200)

    health = activities(engine, backend, handler)

    async def sweep() -> list[str]:
        changed: list[str] = []
        for shard in range(2):
            result = await ActivityEnvironment().run(
                health.probe_model_shard, ProbeShardInput(shard=shard, shards=2)
            )
            changed += [
                f"{c.cluster_name}:{c.signal.healthy}"
                for c in result.changed
                if c.node_id == node_id
            ]
        return changed

    assert await sweep() == []  # one failure: below the threshold of 2
    assert await sweep() == [f"{cluster}:False"]  # the second in a row: unhealthy
    failures = await ProbeRepository(engine).get(node_id)
    assert failures is not None
    assert failures.consecutive_failures == 2
    assert "HTTP 503" in (failures.last_error or "")
    await nodes.transition(
        node_id,
        lifecycle.UNHEALTHY,
        dedupe_key=f"{node_id}:node.unhealthy:1",
    )
    assert await sweep() == []  # still failing, already recorded: nothing to say
    sick.clear()
    assert await sweep() == [f"{cluster}:True"]  # answers again: healthy
    assert (await ProbeRepository(engine).get(node_id)).consecutive_failures == 0  # type: ignore[union-attr]
