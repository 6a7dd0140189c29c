"""Tenant cloud credentials, sealed with AES-256-GCM before they reach the database.

The associated data binds each ciphertext to its tenant, provider and format version, so a row
copied to another tenant or provider fails to open instead of leaking across tenants. Each row
records the id (a fingerprint) of the key that sealed it; previous keys stay usable for reading
until ``rotate()`` has re-sealed everything under the current key. Errors name the tenant,
provider and key id, and say what to do; they never carry secret material.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

from controlplane.config import ConfigError, Settings
from controlplane.credential_policy import R2Keys, SecretName, Workspace, check_secret_names
from controlplane.db.models import CredentialRef, Sealed, SealedRow
from controlplane.db.repository import CredentialRepository
from controlplane.keyring import KEY_HELP, KeyRing, OpenFailed, UnknownKeyId

__all__ = [
    "CredentialPayload",
    "CredentialRef",
    "CredentialStore",
    "RotationFailure",
    "RotationReport",
    "Sealed",
    "Vault",
    "VaultError",
]

FORMAT_VERSION = 1
PREVIOUS_KEYS_VARIABLE = "SKYPILOT_CREDENTIAL_PREVIOUS_KEYS"
KEY_VARIABLE = "SKYPILOT_CREDENTIAL_ENCRYPTION_KEY"


class VaultError(Exception):
    """Credentials that cannot be sealed or opened. The message is safe to log."""


class CredentialPayload(BaseModel):
    """What a tenant stores for a provider: its SkyPilot workspace, env-style secrets and,
    optionally, its own R2 key pair (used on its nodes instead of the platform's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workspace: Workspace | None = None
    secrets: dict[SecretName, SecretStr] = Field(default_factory=dict)
    r2: R2Keys | None = None

    @field_validator("secrets")
    @classmethod
    def _no_empty_secret(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        empty = sorted(name for name, secret in value.items() if not secret.get_secret_value())
        if empty:
            raise ValueError(f"empty value for {', '.join(empty)}")
        check_secret_names(value)  # a CredentialPolicyError is a ValueError: a field error
        return value

    @field_validator("r2")
    @classmethod
    def _no_empty_r2_key(cls, value: R2Keys | None) -> R2Keys | None:
        if value is not None:
            for name in ("access_key_id", "secret_access_key"):
                if not getattr(value, name).get_secret_value():
                    raise ValueError(f"{name} is empty")
        return value

    def reveal(self) -> dict[str, object]:
        """The plain document, secrets included: only for sealing."""
        document: dict[str, object] = {
            "workspace": self.workspace,
            "secrets": {name: secret.get_secret_value() for name, secret in self.secrets.items()},
        }
        if self.r2 is not None:  # absent when unset: older workers can still open the row
            document["r2"] = {
                "access_key_id": self.r2.access_key_id.get_secret_value(),
                "secret_access_key": self.r2.secret_access_key.get_secret_value(),
            }
        return document


def _associated_data(tenant: str, provider: str) -> bytes:
    # JSON keeps the fields unambiguous (no separator a tenant name could contain).
    return json.dumps(["controlplane.credentials", FORMAT_VERSION, tenant, provider]).encode()


def _safe_problems(exc: ValidationError) -> str:
    """Field and rule of each problem; never a value, nor a dict key (it may be a token)."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        field = str(error["loc"][0]) if error["loc"] else "document"
        problems.append(f"{field}: {str(error['msg']).removeprefix('Value error, ')}")
    return "; ".join(sorted(set(problems)))


def _where(tenant: str, provider: str) -> str:
    return f"credentials of tenant {tenant!r} for provider {provider!r}"


class Vault:
    """Seals with the current key; opens with the current or any previous key."""

    def __init__(self, current_key: bytes, previous_keys: Sequence[bytes] = ()) -> None:
        self._ring = KeyRing(current_key, previous_keys, use="credential")
        self.current_key_id = self._ring.current_key_id

    def __repr__(self) -> str:
        return f"Vault(current_key_id={self.current_key_id!r}, key_ids={sorted(self.key_ids)!r})"

    @classmethod
    def from_settings(cls, settings: Settings) -> Vault:
        key = settings.encryption_key
        if key is None:
            raise ConfigError(
                [
                    f"{KEY_VARIABLE}: not set; it is needed to store or read tenant credentials; "
                    f"expected {KEY_HELP}"
                ]
            )
        return cls(key, settings.previous_encryption_keys)

    @property
    def key_ids(self) -> frozenset[str]:
        return self._ring.key_ids

    def seal(self, tenant: str, provider: str, payload: CredentialPayload) -> Sealed:
        plaintext = json.dumps(payload.reveal(), separators=(",", ":")).encode()
        sealed_key_id, nonce, ciphertext = self._ring.seal(
            plaintext, _associated_data(tenant, provider)
        )
        return Sealed(key_id=sealed_key_id, nonce=nonce, ciphertext=ciphertext)

    def open(self, tenant: str, provider: str, sealed: Sealed) -> CredentialPayload:
        where = _where(tenant, provider)
        try:
            plaintext = self._ring.open(
                sealed.key_id, sealed.nonce, sealed.ciphertext, _associated_data(tenant, provider)
            )
        except UnknownKeyId:
            raise VaultError(
                f"cannot open {where}: they were sealed with key id {sealed.key_id!r}, which is "
                f"neither the current key ({self.current_key_id!r}) nor a previous one; set "
                f"{PREVIOUS_KEYS_VARIABLE} to the old key (comma-separated if several), then run "
                "`python -m controlplane.credentials_cli rotate`"
            ) from None
        except OpenFailed:
            raise VaultError(
                f"cannot open {where} sealed with key id {sealed.key_id!r}: authentication "
                "failed, so the row was altered, copied from another tenant or provider, or "
                "sealed by a different key under the same id; store them again with "
                "`python -m controlplane.credentials_cli put`"
            ) from None
        try:
            return CredentialPayload.model_validate_json(plaintext)
        except ValidationError as exc:
            raise VaultError(
                f"{where} (key id {sealed.key_id!r}) decrypted but are not a valid credential "
                f"document ({_safe_problems(exc)}); store them again with "
                "`python -m controlplane.credentials_cli put`"
            ) from None

    def needs_rotation(self, sealed: Sealed) -> bool:
        return sealed.key_id != self.current_key_id


class RotationFailure(BaseModel):
    tenant: str
    provider: str
    reason: str


class RotationReport(BaseModel):
    total: int = 0
    rotated: int = 0
    already_current: int = 0
    failed: list[RotationFailure] = Field(default_factory=list)


def _ref(row: SealedRow) -> CredentialRef:
    return CredentialRef(
        tenant=row.tenant, provider=row.provider, key_id=row.key_id, updated_at=row.updated_at
    )


class CredentialStore:
    """The vault plus its table: what activities and the credentials command use."""

    def __init__(self, vault: Vault, repository: CredentialRepository) -> None:
        self.vault = vault
        self.repository = repository

    async def put(self, tenant: str, provider: str, payload: CredentialPayload) -> CredentialRef:
        row = await self.repository.put(
            tenant, provider, self.vault.seal(tenant, provider, payload)
        )
        return _ref(row)

    async def reference(self, tenant: str, provider: str) -> CredentialRef | None:
        """A non-secret pointer for workflow history; None when nothing is stored."""
        row = await self.repository.get(tenant, provider)
        return None if row is None else _ref(row)

    async def references(self) -> list[CredentialRef]:
        return [_ref(row) for row in await self.repository.all()]

    async def resolve(self, tenant: str, provider: str) -> CredentialPayload | None:
        """The decrypted credentials; None means launch on the API server's own defaults."""
        row = await self.repository.get(tenant, provider)
        return None if row is None else self.vault.open(tenant, provider, row)

    async def delete(self, tenant: str, provider: str) -> bool:
        return await self.repository.delete(tenant, provider)

    async def rotate(self) -> RotationReport:
        """Re-seal every row not under the current key; never overwrites a concurrent put."""
        report = RotationReport()
        for row in await self.repository.all():
            report.total += 1
            if not self.vault.needs_rotation(row):
                report.already_current += 1
                continue
            try:
                payload = self.vault.open(row.tenant, row.provider, row)
            except VaultError as exc:
                report.failed.append(_failure(row, str(exc)))
                continue
            resealed = self.vault.seal(row.tenant, row.provider, payload)
            swapped = await self.repository.replace_ciphertext(
                row.tenant, row.provider, row.key_id, resealed, old_nonce=row.nonce
            )
            if swapped:
                report.rotated += 1
                continue
            # Someone replaced or deleted the row meanwhile: judge what is there now.
            now = await self.repository.get(row.tenant, row.provider)
            if now is None:
                report.total -= 1  # deleted meanwhile: nothing left to rotate
            elif not self.vault.needs_rotation(now):
                report.already_current += 1  # re-stored meanwhile, under the current key
            else:
                report.failed.append(_failure(row, "changed during rotation; run rotate again"))
        return report


def _failure(row: SealedRow, reason: str) -> RotationFailure:
    return RotationFailure(tenant=row.tenant, provider=row.provider, reason=reason)
