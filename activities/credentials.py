"""Credential activity: find a tenant's credential reference. The secret itself stays put."""

from __future__ import annotations

from temporalio import activity

from activities.errors import permanent
from controlplane.db.repository import CredentialRepository
from workflows.models import CredentialRef, CredentialRefInput, CredentialRefResult


class CredentialActivities:
    """Returns only a pointer (tenant, provider, key id); launch_cluster decrypts at use."""

    def __init__(self, repository: CredentialRepository, *, can_decrypt: bool) -> None:
        self.repository = repository
        self.can_decrypt = can_decrypt

    @activity.defn(name="credential_reference")
    async def credential_reference(self, input: CredentialRefInput) -> CredentialRefResult:
        row = await self.repository.get(input.tenant, input.provider)
        if row is None:
            # The guide's nil: launch on the API server's own credentials.
            return CredentialRefResult(ref=None)
        if not self.can_decrypt:
            raise permanent(
                f"tenant {input.tenant} has stored {input.provider} credentials, but this worker "
                "has no SKYPILOT_CREDENTIAL_ENCRYPTION_KEY; nothing was launched",
                "ConfigurationError",
            )
        return CredentialRefResult(
            ref=CredentialRef(
                tenant=input.tenant,
                provider=input.provider,
                key_id=row.key_id,
                updated_at=row.updated_at,
            )
        )
