"""The fleet-health tables on PostgreSQL: the unhealthy status, probe shards, launch slots."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from controlplane import lifecycle
from controlplane.db.launch_slots import LaunchSlotRepository
from controlplane.db.probes import ProbeRecord, ProbeRepository
from controlplane.db.repository import NodeRepository
from tests.support.nodes import serving_node as serving

LEASE = timedelta(minutes=10)
TTL = timedelta(minutes=1)


async def serving_node(nodes: NodeRepository, *, endpoint: str | None = "127.0.0.1:1/m") -> str:
    return (await serving(nodes, endpoint)).node_id


async def test_a_running_node_becomes_unhealthy_and_healthy_again(nodes: NodeRepository) -> None:
    node_id = await serving_node(nodes)
    sick = await nodes.transition(
        node_id,
        lifecycle.UNHEALTHY,
        dedupe_key=f"{node_id}:node.unhealthy:1",
    )
    assert sick.row.status == "unhealthy"
    well = await nodes.transition(
        node_id,
        lifecycle.HEALTHY,
        dedupe_key=f"{node_id}:node.healthy:1",
    )
    assert well.row.status == "running"
    kinds = [e.event_type for e in await nodes.events(node_id)]
    assert kinds[-2:] == ["node.unhealthy", "node.healthy"]


async def test_probe_shards_cover_every_serving_node_once(
    nodes: NodeRepository, engine: AsyncEngine
) -> None:
    probes = ProbeRepository(engine)
    mine = {await serving_node(nodes) for _ in range(12)}
    no_endpoint = await serving_node(nodes, endpoint=None)
    shards = 4
    seen: list[str] = []
    for shard in range(shards):
        seen.extend(t.node_id for t in await probes.shard(shard, shards))
    assert sorted(n for n in seen if n in mine) == sorted(mine)  # each exactly once
    assert no_endpoint not in seen
    with pytest.raises(ValueError, match=r"shard must be in 0\.\.3"):
        await probes.shard(4, 4)


async def test_probe_records_are_upserted_and_read_back_with_the_shard(
    nodes: NodeRepository, engine: AsyncEngine
) -> None:
    probes = ProbeRepository(engine)
    node_id = await serving_node(nodes)
    now = datetime.now(UTC)
    await probes.record([ProbeRecord(node_id=node_id, consecutive_failures=2, last_error="x")], now)
    await probes.record([ProbeRecord(node_id=node_id, consecutive_failures=3, last_error="y")], now)
    assert await probes.get(node_id) == ProbeRecord(
        node_id=node_id, consecutive_failures=3, last_error="y"
    )
    targets = [t for s in range(2) for t in await probes.shard(s, 2) if t.node_id == node_id]
    assert [t.consecutive_failures for t in targets] == [3]
    assert targets[0].model == "org/model"


async def test_launch_slots_cap_in_flight_launches_first_come_first_served(
    nodes: NodeRepository, engine: AsyncEngine
) -> None:
    slots = LaunchSlotRepository(engine)
    key = f"api:http://sim-{uuid.uuid4().hex[:6]}"
    ids = [await serving_node(nodes) for _ in range(4)]

    async def ask(node_id: str) -> bool:
        answer = await slots.try_acquire(node_id, key, budget=2, lease=LEASE, waiter_ttl=TTL)
        return answer.granted

    assert [await ask(n) for n in ids] == [True, True, False, False]
    assert await slots.in_flight(key) == 2
    # The third asked first: when a slot frees, the fourth cannot jump the queue.
    assert await slots.release(ids[0])
    assert not await ask(ids[3])
    assert await ask(ids[2])
    assert await ask(ids[1])  # a holder asking again keeps its slot
    assert await slots.in_flight(key) == 2
    assert not await slots.release("no-such-node")


async def test_concurrent_asks_never_exceed_the_budget(
    nodes: NodeRepository, engine: AsyncEngine
) -> None:
    slots = LaunchSlotRepository(engine)
    key = f"api:http://sim-{uuid.uuid4().hex[:6]}"
    ids = [await serving_node(nodes) for _ in range(10)]
    answers = await asyncio.gather(
        *(slots.try_acquire(n, key, budget=3, lease=LEASE, waiter_ttl=TTL) for n in ids)
    )
    assert sum(a.granted for a in answers) == 3
    assert sorted(a.ahead for a in answers if not a.granted) == list(range(7))


async def test_an_expired_lease_and_a_silent_waiter_free_their_places(
    nodes: NodeRepository, engine: AsyncEngine
) -> None:
    slots = LaunchSlotRepository(engine)
    key = f"api:http://sim-{uuid.uuid4().hex[:6]}"
    holder, silent, patient = [await serving_node(nodes) for _ in range(3)]
    short = timedelta(milliseconds=200)
    assert (await slots.try_acquire(holder, key, budget=1, lease=short, waiter_ttl=TTL)).granted
    assert not (await slots.try_acquire(silent, key, budget=1, lease=LEASE, waiter_ttl=TTL)).granted
    assert not (
        await slots.try_acquire(patient, key, budget=1, lease=LEASE, waiter_ttl=TTL)
    ).granted
    await asyncio.sleep(0.4)  # the holder's lease ran out; the silent waiter stopped asking
    answer = await slots.try_acquire(patient, key, budget=1, lease=LEASE, waiter_ttl=short)
    assert answer.granted
    assert await slots.in_flight(key) == 1
