"""Who "we" are to the reconciler: our SkyPilot user, as cluster records name it, and our prefix.

Under a service-account token the server decides the user (it overrides the identity a request
sends), so the reconciler asks it (``/api/health``'s ``user.id``); without a token, requests
belong to SKYPILOT_USER_ID. When the server does not say, nothing is ours.
"""

from __future__ import annotations

from typing import Any, cast

from temporalio.testing import ActivityEnvironment

from activities.reconcile import ReconcileActivities
from controlplane.config import load_settings
from controlplane.db.repository import NodeRepository
from controlplane.lifecycle import LaunchMode
from controlplane.reconcile import Owner
from controlplane.skypilot.backend import ApiBackend, SkyPilotBackend
from controlplane.skypilot.client import SkyPilotClient
from controlplane.skypilot.models import HealthInfo

TOKEN = "sky_unit-test-token-value-123456"


class HealthOnly:
    """A client that only answers /api/health, with the body the real server sends."""

    def __init__(self, user: dict[str, Any] | None) -> None:
        self.body = {"status": "healthy", "api_version": "62", "user": user}

    async def health(self) -> HealthInfo:
        return HealthInfo.model_validate(self.body)


async def owner_of(env: dict[str, str], backend: SkyPilotBackend) -> Owner:
    activities = ReconcileActivities(
        {backend.mode: backend},
        cast(NodeRepository, None),  # the owner needs no database
        load_settings(env),
        LaunchMode.API,
    )
    return cast(Owner, await ActivityEnvironment().run(activities._owner, backend))


def api_backend(user: dict[str, Any] | None) -> ApiBackend:
    return ApiBackend(cast(SkyPilotClient, HealthOnly(user)))


async def test_with_a_token_our_user_is_the_one_the_server_names() -> None:
    user = {"id": "sa-5f3b7bab4ceb1223", "name": "orchestrator-sa", "password": "$2b$12$hash"}
    owner = await owner_of(
        {"SKYPILOT_SERVICE_ACCOUNT_TOKEN": TOKEN, "CLUSTER_NAME_PREFIX": "stg"},
        api_backend(user),
    )
    assert owner == Owner(prefix="stg", user="sa-5f3b7bab4ceb1223")


async def test_with_a_token_and_no_answer_nothing_is_ours() -> None:
    owner = await owner_of({"SKYPILOT_SERVICE_ACCOUNT_TOKEN": TOKEN}, api_backend(None))
    assert owner == Owner(prefix="cpn", user=None)


async def test_without_a_token_our_user_is_skypilot_user_id() -> None:
    owner = await owner_of({"SKYPILOT_USER_ID": "orch0001"}, api_backend(None))
    assert owner == Owner(prefix="cpn", user="orch0001")


def test_the_health_answer_keeps_the_user_id_and_drops_the_password_hash() -> None:
    health = HealthOnly({"id": "sa-1", "name": "n", "password": "$2b$12$secret-hash"}).body
    info = HealthInfo.model_validate(health)
    assert info.user_id == "sa-1"
    assert "secret-hash" not in info.model_dump_json()
    assert HealthInfo.model_validate({"status": "healthy", "user": None}).user_id is None
