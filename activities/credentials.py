"""Credential activity: find a tenant's credential reference. The secret itself stays put."""

from __future__ import annotations

from temporalio import activity

from activities.errors import permanent
from controlplane.db.repository import CredentialRepository
from controlplane.vault import CredentialStore
from workflows import activity_refs as acts
from workflows.models import CredentialRefInput, CredentialRefResult


class CredentialActivities:
    """Returns only a pointer (tenant, provider, key id); launch_cluster decrypts at use.

    ``store`` is None on a worker without SKYPILOT_CREDENTIAL_ENCRYPTION_KEY: it can still tell
    that credentials are stored (through ``repository``), and refuses rather than launch without.
    """

    def __init__(self, repository: CredentialRepository, *, store: CredentialStore | None) -> None:
        self.repository = repository
        self.store = store

    @activity.defn(name=acts.CREDENTIAL_REFERENCE.name)
    async def credential_reference(self, input: CredentialRefInput) -> CredentialRefResult:
        if self.store is not None:
            # None is the guide's nil: launch on the API server's own credentials.
            return CredentialRefResult(ref=await self.store.reference(input.tenant, input.provider))
        if await self.repository.get(input.tenant, input.provider) is None:
            return CredentialRefResult(ref=None)
        raise permanent(
            f"tenant {input.tenant} has stored {input.provider} credentials, but this worker "
            "has no SKYPILOT_CREDENTIAL_ENCRYPTION_KEY; nothing was launched",
            "ConfigurationError",
        )
