"""The credential_reference activity answers with the store's reference (issue 9: one path).

It runs against the real credential table: with a key it returns ``CredentialStore.reference``
(the one place a reference is made); without a key it refuses a tenant that has credentials
stored, and lets a tenant without any launch on the API server's own credentials.
"""

from __future__ import annotations

import os

import pytest
from pydantic import SecretStr
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.credentials import CredentialActivities
from controlplane.db.repository import CredentialRepository
from controlplane.db.schema import tenant_credentials
from controlplane.vault import CredentialPayload, CredentialStore, Vault
from workflows.models import CredentialRefInput

KEY = os.urandom(32)
SECRET = "hf_reference-secret-0123456789"


@pytest.fixture
async def rows(credential_rows: CredentialRepository, engine: AsyncEngine) -> CredentialRepository:
    async with engine.begin() as connection:
        await connection.execute(delete(tenant_credentials))
    return credential_rows


async def _store_one(rows: CredentialRepository) -> CredentialStore:
    store = CredentialStore(Vault(KEY), rows)
    await store.put("acme", "aws", CredentialPayload(secrets={"HF_TOKEN": SecretStr(SECRET)}))
    return store


async def test_with_a_key_the_reference_is_the_stores(rows: CredentialRepository) -> None:
    store = await _store_one(rows)
    activities = CredentialActivities(rows, store=store)

    found = await ActivityEnvironment().run(
        activities.credential_reference, CredentialRefInput(tenant="acme", provider="aws")
    )
    missing = await ActivityEnvironment().run(
        activities.credential_reference, CredentialRefInput(tenant="acme", provider="gcp")
    )

    assert found.ref == await store.reference("acme", "aws")
    assert found.ref is not None
    assert found.ref.key_id == Vault(KEY).current_key_id
    assert SECRET not in found.model_dump_json()
    assert missing.ref is None


async def test_without_a_key_stored_credentials_are_refused(rows: CredentialRepository) -> None:
    await _store_one(rows)
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
