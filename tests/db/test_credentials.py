"""CredentialStore and the credentials command against a real PostgreSQL."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from controlplane.config import key_id
from controlplane.db.models import SealedRow
from controlplane.db.repository import CredentialRepository
from controlplane.db.schema import tenant_credentials
from controlplane.vault import CredentialPayload, CredentialStore, Vault, VaultError
from tests.support.processes import run_text
from tests.unit.test_vault import PUT_ACME_AWS

SECRET = "hf_store-test-secret-value-9876543210"
OTHER_SECRET = "sk-second-secret-value-0123456789abcdef"
OLD_KEY, NEW_KEY, LOST_KEY = os.urandom(32), os.urandom(32), os.urandom(32)


def payload(secret: str = SECRET) -> CredentialPayload:
    return CredentialPayload(workspace="team-a", secrets={"HF_TOKEN": SecretStr(secret)})


@pytest.fixture
async def rows(credential_rows: CredentialRepository, engine: AsyncEngine) -> CredentialRepository:
    """An empty credentials table: rotate() and list see every row, so tests start clean."""
    async with engine.begin() as connection:
        await connection.execute(delete(tenant_credentials))
    return credential_rows


async def test_put_reference_resolve(rows: CredentialRepository) -> None:
    store = CredentialStore(Vault(NEW_KEY), rows)

    assert await store.resolve("acme", "aws") is None
    assert await store.reference("acme", "aws") is None
    stored = await store.put("acme", "aws", payload())
    ref = await store.reference("acme", "aws")

    assert ref == stored
    assert ref is not None
    assert ref.key_id == key_id(NEW_KEY)
    assert set(ref.model_dump()) == {"tenant", "provider", "key_id", "updated_at"}
    assert SECRET not in ref.model_dump_json()
    opened = await store.resolve("acme", "aws")
    assert opened is not None
    assert opened.secrets["HF_TOKEN"].get_secret_value() == SECRET
    row = await rows.get("acme", "aws")
    assert row is not None
    assert SECRET.encode() not in row.ciphertext


async def test_put_replaces_and_delete_removes(rows: CredentialRepository) -> None:
    store = CredentialStore(Vault(NEW_KEY), rows)
    await store.put("acme", "aws", payload())
    await store.put("acme", "aws", payload(OTHER_SECRET))

    opened = await store.resolve("acme", "aws")
    assert opened is not None
    assert opened.secrets["HF_TOKEN"].get_secret_value() == OTHER_SECRET
    assert len(await rows.all()) == 1
    assert await store.delete("acme", "aws")
    assert not await store.delete("acme", "aws")
    assert await store.resolve("acme", "aws") is None


@pytest.mark.parametrize(("tenant", "provider"), [("globex", "aws"), ("acme", "gcp")])
async def test_row_copied_to_another_tenant_or_provider_fails(
    rows: CredentialRepository, tenant: str, provider: str
) -> None:
    store = CredentialStore(Vault(NEW_KEY), rows)
    await store.put("acme", "aws", payload())
    original = await rows.get("acme", "aws")
    assert original is not None
    await rows.put(tenant, provider, original)  # an attacker or a bad script copies the row

    with pytest.raises(VaultError) as caught:
        await store.resolve(tenant, provider)

    message = str(caught.value)
    assert repr(tenant) in message
    assert repr(provider) in message
    assert SECRET not in message


async def test_rotation(rows: CredentialRepository) -> None:
    await CredentialStore(Vault(OLD_KEY), rows).put("acme", "aws", payload())
    await CredentialStore(Vault(OLD_KEY), rows).put("globex", "gcp", payload(OTHER_SECRET))
    await CredentialStore(Vault(NEW_KEY), rows).put("initech", "azure", payload())
    store = CredentialStore(Vault(NEW_KEY, [OLD_KEY]), rows)

    readable = await store.resolve("acme", "aws")  # old rows stay readable before rotation
    assert readable is not None
    report = await store.rotate()

    assert (report.total, report.rotated, report.already_current) == (3, 2, 1)
    assert report.failed == []
    assert {row.key_id for row in await rows.all()} == {key_id(NEW_KEY)}
    without_old = CredentialStore(Vault(NEW_KEY), rows)
    opened = await without_old.resolve("globex", "gcp")
    assert opened is not None
    assert opened.secrets["HF_TOKEN"].get_secret_value() == OTHER_SECRET
    again = await store.rotate()
    assert (again.total, again.rotated, again.already_current) == (3, 0, 3)


async def test_rotation_reports_rows_it_cannot_open(rows: CredentialRepository) -> None:
    await CredentialStore(Vault(LOST_KEY), rows).put("acme", "aws", payload())
    await CredentialStore(Vault(OLD_KEY), rows).put("globex", "gcp", payload())

    report = await CredentialStore(Vault(NEW_KEY, [OLD_KEY]), rows).rotate()

    assert (report.total, report.rotated, report.already_current) == (2, 1, 0)
    assert [(f.tenant, f.provider) for f in report.failed] == [("acme", "aws")]
    assert "SKYPILOT_CREDENTIAL_PREVIOUS_KEYS" in report.failed[0].reason
    assert SECRET not in report.model_dump_json()


async def test_replace_ciphertext_never_overwrites_a_concurrent_put(
    rows: CredentialRepository,
) -> None:
    old_vault, new_vault = Vault(OLD_KEY), Vault(NEW_KEY)
    await rows.put("acme", "aws", old_vault.seal("acme", "aws", payload()))
    read = await rows.get("acme", "aws")
    assert read is not None
    # A put lands between the rotation's read and its write.
    await rows.put("acme", "aws", new_vault.seal("acme", "aws", payload(OTHER_SECRET)))

    resealed = new_vault.seal("acme", "aws", old_vault.open("acme", "aws", read))
    swapped = await rows.replace_ciphertext("acme", "aws", read.key_id, resealed)

    assert not swapped
    opened = new_vault.open("acme", "aws", await _get(rows, "acme", "aws"))
    assert opened.secrets["HF_TOKEN"].get_secret_value() == OTHER_SECRET
    # Same key id but a different nonce (a put under the old key): the nonce guard holds.
    await rows.put("acme", "aws", old_vault.seal("acme", "aws", payload(OTHER_SECRET)))
    assert not await rows.replace_ciphertext(
        "acme", "aws", read.key_id, resealed, old_nonce=read.nonce
    )


async def _get(rows: CredentialRepository, tenant: str, provider: str) -> SealedRow:
    row = await rows.get(tenant, provider)
    assert row is not None
    return row


# --- the command, run as a person would run it ---


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def run_cli(
    database_url: str,
    *args: str,
    key: bytes = NEW_KEY,
    previous: tuple[bytes, ...] = (),
    stdin: str | None = None,
    workspaces: str = '{"acme": ["team-a"], "globex": ["team-a"]}',
) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SKYPILOT_", "DATABASE_", "TENANT_WORKSPACES"))
    }
    env["DATABASE_URL"] = database_url
    env["TENANT_WORKSPACES"] = workspaces
    env["SKYPILOT_CREDENTIAL_ENCRYPTION_KEY"] = b64(key)
    if previous:
        env["SKYPILOT_CREDENTIAL_PREVIOUS_KEYS"] = ",".join(b64(k) for k in previous)
    result = run_text(
        [sys.executable, "-m", "controlplane.credentials_cli", *args], env=env, stdin=stdin
    )
    for secret in (SECRET, OTHER_SECRET):
        assert secret not in result.stdout + result.stderr
    for material in (b64(key), *(b64(k) for k in previous)):
        assert material not in result.stdout + result.stderr
    return result


def document(secret: str = SECRET) -> str:
    return json.dumps({"workspace": "team-a", "secrets": {"HF_TOKEN": secret}})


async def test_cli_put_from_file_and_stdin_then_list(
    rows: CredentialRepository, database_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "acme.json"
    path.write_text(document())

    from_file = run_cli(
        database_url, "put", "--tenant", "acme", "--provider", "aws", "--file", str(path)
    )
    from_stdin = run_cli(
        database_url,
        "put",
        "--tenant",
        "globex",
        "--provider",
        "gcp",
        "--file",
        "-",
        stdin=document(OTHER_SECRET),
    )
    listed = run_cli(database_url, "list")

    assert from_file.returncode == 0, from_file.stderr
    assert json.loads(from_file.stdout) == {
        "tenant": "acme",
        "provider": "aws",
        "key_id": key_id(NEW_KEY),
        "stored": True,
    }
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)["credentials"]
    assert [(e["tenant"], e["provider"], e["key_id"]) for e in entries] == [
        ("acme", "aws", key_id(NEW_KEY)),
        ("globex", "gcp", key_id(NEW_KEY)),
    ]
    store = CredentialStore(Vault(NEW_KEY), rows)
    opened = await store.resolve("globex", "gcp")
    assert opened is not None
    assert opened.secrets["HF_TOKEN"].get_secret_value() == OTHER_SECRET


async def test_cli_rotate(rows: CredentialRepository, database_url: str) -> None:
    stored = run_cli(
        database_url,
        *PUT_ACME_AWS,
        key=OLD_KEY,
        stdin=document(),
    )
    assert stored.returncode == 0, stored.stderr

    without_old = run_cli(database_url, "rotate")
    rotated = run_cli(database_url, "rotate", previous=(OLD_KEY,))

    assert without_old.returncode == 1
    assert json.loads(without_old.stdout)["failed"][0]["tenant"] == "acme"
    assert rotated.returncode == 0, rotated.stderr
    counts = json.loads(rotated.stdout)
    assert (counts["total"], counts["rotated"], counts["already_current"]) == (1, 1, 0)
    opened = await CredentialStore(Vault(NEW_KEY), rows).resolve("acme", "aws")
    assert opened is not None
    assert opened.secrets["HF_TOKEN"].get_secret_value() == SECRET


async def test_cli_rejects_invalid_documents_without_echoing_them(
    rows: CredentialRepository, database_url: str
) -> None:
    bad = json.dumps({"secrets": {SECRET: OTHER_SECRET, "HF_TOKEN": 7}})
    result = run_cli(database_url, *PUT_ACME_AWS, stdin=bad)
    unknown = run_cli(
        database_url,
        "put",
        "--tenant",
        "acme",
        "--provider",
        "nowhere",
        "--file",
        "-",
        stdin=document(),
    )

    assert result.returncode == 1
    assert "secrets" in result.stderr
    assert "HF_TOKEN" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert unknown.returncode == 1
    assert "--provider" in unknown.stderr
    assert await rows.all() == []


async def test_cli_delete(rows: CredentialRepository, database_url: str) -> None:
    await CredentialStore(Vault(NEW_KEY), rows).put("acme", "aws", payload())
    result = run_cli(database_url, "delete", "--tenant", "acme", "--provider", "aws")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["deleted"] is True
    assert await rows.get("acme", "aws") is None


@pytest.mark.parametrize("name", ["PIP_INDEX_URL", "LD_PRELOAD", "PYTHONPATH", "BASH_ENV", "PATH"])
async def test_cli_put_refuses_a_denied_secret_name_and_stores_nothing(
    rows: CredentialRepository, database_url: str, name: str
) -> None:
    smuggled = json.dumps({"secrets": {"HF_TOKEN": SECRET, name: "https://evil.example.com"}})
    result = run_cli(database_url, *PUT_ACME_AWS, stdin=smuggled)
    assert result.returncode == 1
    assert result.stderr.startswith("error: invalid credential document in stdin: secrets: ")
    assert "denied" in result.stderr
    assert "evil.example.com" not in result.stderr
    assert await rows.get("acme", "aws") is None


@pytest.mark.parametrize(
    ("workspaces", "allowed_listed"),
    [("", "none"), ('{"acme": ["team-b"]}', "team-b"), ('{"globex": ["team-a"]}', "none")],
)
async def test_cli_put_refuses_a_workspace_not_allowed_for_the_tenant(
    rows: CredentialRepository, database_url: str, workspaces: str, allowed_listed: str
) -> None:
    result = run_cli(
        database_url,
        *PUT_ACME_AWS,
        stdin=document(),
        workspaces=workspaces,
    )
    assert result.returncode == 1
    assert "workspace 'team-a' is not allowed for tenant 'acme'" in result.stderr
    assert f"TENANT_WORKSPACES allows {allowed_listed} for it" in result.stderr
    assert await rows.get("acme", "aws") is None


async def test_cli_with_a_bad_tenant_workspaces_exits_2_naming_it(
    rows: CredentialRepository, database_url: str
) -> None:
    result = run_cli(database_url, "list", workspaces='{"acme": "team-a"}')
    assert result.returncode == 2
    assert "TENANT_WORKSPACES: acme: Input should be a valid list" in result.stderr
