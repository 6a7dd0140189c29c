"""The reconciler on a SkyPilot server shared with other users and other installations.

Seen on the simulator before this: the reconciler downed another service account's ``cpn-``
cluster. Here one simulator has two service accounts. Ours launches ``cpn-`` and ``stg-``
clusters (two installations on one user); the other launches a ``cpn-`` one. With cleanup on,
the ``cpn`` installation downs only its own orphan, the ``stg`` installation
(CLUSTER_NAME_PREFIX=stg) only its own, and the other user's cluster is never touched.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from controlplane.config import load_settings
from controlplane.skypilot.client import SkyPilotClient
from devtools.skypilot_sim.config import SimConfig
from devtools.skypilot_sim.server import SimulatorServer
from tests.integration.conftest import SIM_TOKEN, Stack
from tests.integration.test_reconciler import launch_directly, reconcile, running_worker

OTHER_TOKEN = "sky_another-teams-service-account-token"


@pytest.fixture
def shared_server() -> Iterator[SimulatorServer]:
    """A SkyPilot server of its own: two service accounts, nobody else's clusters."""
    server = SimulatorServer(
        SimConfig(
            port=0,
            launch_delay_s=0.2,
            model_warmup_s=0.1,
            down_delay_s=0.1,
            service_account_tokens=[SIM_TOKEN, OTHER_TOKEN],
        )
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def plant(server: SimulatorServer, token: str, name: str) -> None:
    async with SkyPilotClient(server.url, token=SecretStr(token)) as sky:
        await launch_directly(sky, name)


async def test_the_reconciler_downs_only_our_users_clusters_with_our_prefix(
    stack: Stack, shared_server: SimulatorServer
) -> None:
    suffix = uuid.uuid4().hex[:8]
    ours = f"cpn-orphan-{suffix}"
    staging = f"stg-orphan-{suffix}"
    theirs = f"cpn-theirs-{suffix}"
    await plant(shared_server, SIM_TOKEN, ours)
    await plant(shared_server, SIM_TOKEN, staging)
    await plant(shared_server, OTHER_TOKEN, theirs)
    assert load_settings(stack.env).cluster_name_prefix == "cpn"
    on_shared = {"SKYPILOT_API_SERVER_URL": shared_server.url, "RECONCILE_ORPHAN_GRACE": "1ms"}

    async with running_worker(stack, **on_shared, CLUSTER_NAME_PREFIX="stg") as queue:
        report = await reconcile(stack, queue, cleanup=True)
    assert {f.cluster_name for f in report.orphans} == {staging}
    # Rows of other tests share this database; of the planted clusters only staging's is cleaned.
    assert set(report.cleaned) & {ours, staging, theirs} == {staging}
    assert shared_server.cluster_status(staging) is None
    assert shared_server.cluster_status(ours) == "UP"  # the cpn installation's
    assert shared_server.cluster_status(theirs) == "UP"

    async with running_worker(stack, **on_shared) as queue:
        report = await reconcile(stack, queue, cleanup=True)
    assert {f.cluster_name for f in report.orphans} == {ours}
    assert set(report.cleaned) & {ours, staging, theirs} == {ours}
    assert shared_server.cluster_status(ours) is None
    assert shared_server.cluster_status(theirs) == "UP"  # another user's, though named cpn-
    assert report.clusters_seen == 2  # it saw the other user's cluster, and left it
