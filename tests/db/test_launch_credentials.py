"""The launch activity's secret assembly (issue 8.4, 8.6): what it refuses, and how.

``launch_cluster`` runs in Temporal's ActivityEnvironment against the real credential table and
vault, with a backend that records what it would have launched. A refused credential is a
non-retryable ApplicationError whose message says why, and nothing reaches the backend.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.credentials import CredentialActivities
from activities.skypilot import SkyPilotActivities
from controlplane.credential_policy import R2Keys
from controlplane.db.repository import CredentialRepository
from controlplane.db.schema import tenant_credentials
from controlplane.lifecycle import LaunchMode
from controlplane.skypilot.backend import SkyPilotBackend
from controlplane.skypilot.task import SkyTask, TaskSettings
from controlplane.spec import NodeSpec
from controlplane.vault import CredentialPayload, CredentialStore, Vault
from tests.support.specs import node_spec as spec_of
from workflows.models import CredentialRef, CredentialRefInput, LaunchInput

KEY, OTHER_KEY = os.urandom(32), os.urandom(32)
HF_TOKEN = "hf_launch-assembly-secret-0123456789"
SETTINGS = TaskSettings(
    control_plane_url="https://cp.example.com",
    vllm_version="0.11.0",
    torch_version="2.8.0",
    r2_access_key_id=SecretStr("platform-r2-key-id"),
    r2_secret_access_key=SecretStr("platform-r2-secret"),
)


class RecordingBackend:
    """Only ``launch`` is reached by launch_cluster; it records instead of launching."""

    mode = LaunchMode.API

    def __init__(self) -> None:
        self.launched: list[tuple[SkyTask, str | None]] = []

    async def launch(self, cluster_name: str, task: SkyTask, **options: Any) -> str | None:
        self.launched.append((task, options["workspace"]))
        return "request-1"


@pytest.fixture
async def rows(credential_rows: CredentialRepository, engine: AsyncEngine) -> CredentialRepository:
    async with engine.begin() as connection:
        await connection.execute(delete(tenant_credentials))
    return credential_rows


def node_spec() -> NodeSpec:
    return spec_of()


async def launch(
    rows: CredentialRepository,
    backend: RecordingBackend,
    *,
    vault: Vault,
    workspaces: Mapping[str, frozenset[str]] | None = None,
    ref: CredentialRef | None = None,
) -> None:
    spec = node_spec()
    if ref is None:
        ref = CredentialRef(tenant="acme", provider="aws", key_id="k", updated_at=datetime.now(UTC))
    # Only launch() is reached before the refusals under test; the rest of the protocol is not.
    backends = {LaunchMode.API: cast(SkyPilotBackend, backend)}
    async with httpx.AsyncClient() as http:
        activities = SkyPilotActivities(
            backends,
            CredentialStore(vault, rows),
            SETTINGS,
            http,
            tenant_workspaces=workspaces,
        )
        await ActivityEnvironment().run(
            activities.launch_cluster,
            LaunchInput(
                spec=spec,
                cluster_name=spec.cluster_name,
                node_id=spec.node_id,
                launch_mode=LaunchMode.API,
                credential=ref,
            ),
        )


async def test_a_vault_error_is_not_retryable(rows: CredentialRepository) -> None:
    """A row sealed under a key this worker does not have can never open on a retry."""
    payload = CredentialPayload(secrets={"HF_TOKEN": SecretStr(HF_TOKEN)})
    await CredentialStore(Vault(OTHER_KEY), rows).put("acme", "aws", payload)
    backend = RecordingBackend()

    with pytest.raises(ApplicationError) as caught:
        await launch(rows, backend, vault=Vault(KEY))

    assert caught.value.non_retryable
    assert caught.value.type == "VaultError"
    assert "SKYPILOT_CREDENTIAL_PREVIOUS_KEYS" in caught.value.message
    assert "nothing was launched" in caught.value.message
    assert HF_TOKEN not in caught.value.message
    assert backend.launched == []


async def test_an_old_document_with_a_denied_name_is_refused_for_good(
    rows: CredentialRepository,
) -> None:
    """Stored before the deny-list (sealed without validation): the launch still refuses it."""
    vault = Vault(KEY)
    old = CredentialPayload.model_construct(
        workspace=None, secrets={"PIP_INDEX_URL": SecretStr("https://evil.example.com")}, r2=None
    )
    await rows.put("acme", "aws", vault.seal("acme", "aws", old))
    backend = RecordingBackend()

    with pytest.raises(ApplicationError) as caught:
        await launch(rows, backend, vault=vault)

    assert caught.value.non_retryable
    assert "names starting with PIP_ are denied" in caught.value.message
    assert "evil.example.com" not in caught.value.message
    assert backend.launched == []


async def test_a_workspace_not_allowed_for_the_tenant_launches_nothing(
    rows: CredentialRepository,
) -> None:
    vault = Vault(KEY)
    payload = CredentialPayload(workspace="team-b", secrets={"HF_TOKEN": SecretStr(HF_TOKEN)})
    await CredentialStore(vault, rows).put("acme", "aws", payload)
    backend = RecordingBackend()

    for workspaces in (None, {"acme": frozenset({"team-a"})}, {"globex": frozenset({"team-b"})}):
        with pytest.raises(ApplicationError) as caught:
            await launch(rows, backend, vault=vault, workspaces=workspaces)
        assert caught.value.non_retryable
        assert caught.value.type == "CredentialPolicyError"
        assert "workspace 'team-b' is not allowed for tenant 'acme'" in caught.value.message
    assert backend.launched == []

    await launch(rows, backend, vault=vault, workspaces={"acme": frozenset({"team-b"})})
    ((task, workspace),) = backend.launched
    assert workspace == "team-b"
    assert task.secret_values()["HF_TOKEN"] == HF_TOKEN


async def test_a_tenants_own_r2_keys_reach_its_node_instead_of_the_platforms(
    rows: CredentialRepository,
) -> None:
    vault = Vault(KEY)
    own = R2Keys(access_key_id=SecretStr("acme-r2-id"), secret_access_key=SecretStr("acme-r2-s"))
    await CredentialStore(vault, rows).put("acme", "aws", CredentialPayload(r2=own))
    backend = RecordingBackend()

    await launch(rows, backend, vault=vault)

    ((task, _),) = backend.launched
    assert task.secret_values() == {
        "R2_ACCESS_KEY_ID": "acme-r2-id",
        "R2_SECRET_ACCESS_KEY": "acme-r2-s",
    }


@pytest.mark.parametrize(
    ("tenant", "provider"), [("globex", "aws"), ("acme", "gcp")], ids=["tenant", "provider"]
)
async def test_a_reference_for_another_tenant_or_provider_opens_nothing(
    rows: CredentialRepository, tenant: str, provider: str
) -> None:
    """The launch opens the credential its reference names, and only if it is the spec's own:
    a forged reference in the input cannot launch acme's node on globex's (or gcp's) secrets."""
    vault = Vault(KEY)
    other_token = "hf_someone-elses-token-0123456789"
    payload = CredentialPayload(secrets={"HF_TOKEN": SecretStr(other_token)})
    await CredentialStore(vault, rows).put(tenant, provider, payload)
    forged = CredentialRef(tenant=tenant, provider=provider, key_id=vault.current_key_id)
    backend = RecordingBackend()

    with pytest.raises(ApplicationError) as caught:
        await launch(rows, backend, vault=vault, ref=forged)

    assert caught.value.non_retryable
    assert caught.value.type == "CredentialReferenceMismatch"
    assert f"tenant {tenant!r} and provider {provider!r}" in caught.value.message
    assert "tenant 'acme' on provider 'aws'" in caught.value.message
    assert other_token not in caught.value.message
    assert backend.launched == []


async def test_the_reference_activity_answers_with_the_stores_reference(
    rows: CredentialRepository,
) -> None:
    """With a key, credential_reference is ``CredentialStore.reference``: one way to make one."""
    store = CredentialStore(Vault(KEY), rows)
    await store.put("acme", "aws", CredentialPayload(secrets={"HF_TOKEN": SecretStr(HF_TOKEN)}))
    activities = CredentialActivities(rows, store=store)

    found = await ActivityEnvironment().run(
        activities.credential_reference, CredentialRefInput(tenant="acme", provider="aws")
    )
    missing = await ActivityEnvironment().run(
        activities.credential_reference, CredentialRefInput(tenant="acme", provider="gcp")
    )

    assert found.ref is not None
    assert found.ref == await store.reference("acme", "aws")
    assert found.ref.key_id == Vault(KEY).current_key_id
    assert HF_TOKEN not in found.model_dump_json()
    assert missing.ref is None


async def test_without_a_key_the_reference_activity_refuses_stored_credentials(
    rows: CredentialRepository,
) -> None:
    await CredentialStore(Vault(KEY), rows).put(
        "acme", "aws", CredentialPayload(secrets={"HF_TOKEN": SecretStr(HF_TOKEN)})
    )
    activities = CredentialActivities(rows, store=None)

    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(
            activities.credential_reference, CredentialRefInput(tenant="acme", provider="aws")
        )
    none_stored = await ActivityEnvironment().run(
        activities.credential_reference, CredentialRefInput(tenant="globex", provider="aws")
    )

    assert caught.value.non_retryable
    assert caught.value.type == "ConfigurationError"
    assert "SKYPILOT_CREDENTIAL_ENCRYPTION_KEY" in caught.value.message
    assert none_stored.ref is None
