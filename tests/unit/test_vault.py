"""The vault: AES-256-GCM bound to tenant and provider, key rotation, errors that leak nothing."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from controlplane.config import ConfigError, key_id, load_settings
from controlplane.credentials_cli import UsageError, read_document
from controlplane.vault import CredentialPayload, Sealed, Vault, VaultError
from tests.support.processes import run_text

# The credentials command storing acme's aws credential document from stdin.
PUT_ACME_AWS = ("put", "--tenant", "acme", "--provider", "aws", "--file", "-")
SECRET = "hf_vault-unit-test-secret-value-0123456789"
OLD_KEY, NEW_KEY, OTHER_KEY = os.urandom(32), os.urandom(32), os.urandom(32)


def payload() -> CredentialPayload:
    return CredentialPayload(workspace="team-a", secrets={"HF_TOKEN": SecretStr(SECRET)})


def key_texts(*keys: bytes) -> list[str]:
    return [text for key in keys for text in (key.hex(), base64.b64encode(key).decode())]


def assert_leaks_nothing(text: str) -> None:
    assert SECRET not in text
    for material in key_texts(OLD_KEY, NEW_KEY, OTHER_KEY):
        assert material not in text


def test_round_trip() -> None:
    vault = Vault(NEW_KEY)
    sealed = vault.seal("acme", "aws", payload())

    assert sealed.key_id == key_id(NEW_KEY) == vault.current_key_id
    assert len(sealed.nonce) == 12
    assert SECRET.encode() not in sealed.ciphertext
    opened = vault.open("acme", "aws", sealed)
    assert opened.workspace == "team-a"
    assert opened.secrets["HF_TOKEN"].get_secret_value() == SECRET


def test_every_seal_uses_a_fresh_nonce() -> None:
    vault = Vault(NEW_KEY)
    first, second = vault.seal("acme", "aws", payload()), vault.seal("acme", "aws", payload())
    assert first.nonce != second.nonce
    assert first.ciphertext != second.ciphertext


def test_reprs_show_no_secret_or_key() -> None:
    vault = Vault(NEW_KEY, [OLD_KEY])
    sealed = vault.seal("acme", "aws", payload())
    for text in (repr(payload()), str(payload()), repr(vault), repr(sealed)):
        assert_leaks_nothing(text)
    assert "HF_TOKEN" in repr(payload())


@pytest.mark.parametrize(
    ("tenant", "provider"), [("globex", "aws"), ("acme", "gcp"), ("acm", "eaws")]
)
def test_ciphertext_is_bound_to_tenant_and_provider(tenant: str, provider: str) -> None:
    vault = Vault(NEW_KEY)
    sealed = vault.seal("acme", "aws", payload())

    with pytest.raises(VaultError) as caught:
        vault.open(tenant, provider, sealed)

    message = str(caught.value)
    assert repr(tenant) in message
    assert repr(provider) in message
    assert sealed.key_id in message
    assert_leaks_nothing(message)


def test_unknown_key_id_says_to_set_previous_keys() -> None:
    sealed = Vault(OLD_KEY).seal("acme", "aws", payload())

    with pytest.raises(VaultError) as caught:
        Vault(NEW_KEY).open("acme", "aws", sealed)

    message = str(caught.value)
    assert "SKYPILOT_CREDENTIAL_PREVIOUS_KEYS" in message
    assert key_id(OLD_KEY) in message
    assert "'acme'" in message
    assert "'aws'" in message
    assert_leaks_nothing(message)


def test_wrong_key_under_a_matching_id_fails_authentication() -> None:
    sealed = Vault(OTHER_KEY).seal("acme", "aws", payload())
    relabelled = sealed.model_copy(update={"key_id": key_id(NEW_KEY)})

    with pytest.raises(VaultError, match="authentication failed") as caught:
        Vault(NEW_KEY).open("acme", "aws", relabelled)
    assert_leaks_nothing(str(caught.value))


def _flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


@pytest.mark.parametrize(
    "tamper",
    [
        lambda s: s.model_copy(update={"ciphertext": _flip_last_byte(s.ciphertext)}),
        lambda s: s.model_copy(update={"ciphertext": s.ciphertext[:-1]}),
        lambda s: s.model_copy(update={"nonce": _flip_last_byte(s.nonce)}),
        lambda s: s.model_copy(update={"nonce": s.nonce[:4]}),
        lambda s: s.model_copy(update={"nonce": b""}),
    ],
    ids=["ciphertext-bit", "ciphertext-truncated", "nonce-bit", "nonce-short", "nonce-empty"],
)
def test_tampering_is_detected(tamper: Callable[[Sealed], Sealed]) -> None:
    vault = Vault(NEW_KEY)
    tampered = tamper(vault.seal("acme", "aws", payload()))

    with pytest.raises(VaultError) as caught:
        vault.open("acme", "aws", tampered)
    assert_leaks_nothing(str(caught.value))


def test_previous_keys_open_old_rows_and_flag_them_for_rotation() -> None:
    old_row = Vault(OLD_KEY).seal("acme", "aws", payload())
    vault = Vault(NEW_KEY, [OLD_KEY])

    assert vault.open("acme", "aws", old_row).secrets["HF_TOKEN"].get_secret_value() == SECRET
    assert vault.needs_rotation(old_row)
    new_row = vault.seal("acme", "aws", payload())
    assert new_row.key_id == key_id(NEW_KEY)
    assert not vault.needs_rotation(new_row)
    assert vault.key_ids == {key_id(OLD_KEY), key_id(NEW_KEY)}


def test_keys_must_be_32_bytes() -> None:
    short = b"0123456789abcdef"
    with pytest.raises(ValueError, match="32 bytes") as caught:
        Vault(short)
    assert short.decode() not in str(caught.value)
    with pytest.raises(ValueError, match="32 bytes"):
        Vault(NEW_KEY, [short])


def test_from_settings() -> None:
    with pytest.raises(ConfigError, match="SKYPILOT_CREDENTIAL_ENCRYPTION_KEY"):
        Vault.from_settings(load_settings({}))
    settings = load_settings(
        {
            "SKYPILOT_CREDENTIAL_ENCRYPTION_KEY": NEW_KEY.hex(),
            "SKYPILOT_CREDENTIAL_PREVIOUS_KEYS": f"{OLD_KEY.hex()},{OTHER_KEY.hex()}",
        }
    )
    vault = Vault.from_settings(settings)
    assert vault.current_key_id == key_id(NEW_KEY)
    assert vault.key_ids == {key_id(k) for k in (NEW_KEY, OLD_KEY, OTHER_KEY)}


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"secrets": {"hf_token": "x"}}, "secrets"),
        ({"secrets": {"HF TOKEN": "x"}}, "secrets"),
        ({"secrets": {"HF_TOKEN": ""}}, "secrets"),
        ({"secrets": {"HF_TOKEN": 5}}, "secrets.HF_TOKEN"),
        ({"workspace": "team a"}, "workspace"),
        ({"workspace": "", "secrets": {}}, "workspace"),
        ({"secret": {"HF_TOKEN": "x"}}, "secret"),
    ],
)
def test_payload_validation(document: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        CredentialPayload.model_validate(document)
    locations = {".".join(str(p) for p in e["loc"]) for e in caught.value.errors()}
    assert any(loc.startswith(field) for loc in locations), locations


def test_document_errors_name_the_field_and_hide_values(tmp_path: Path) -> None:
    path = tmp_path / "creds.json"
    path.write_text(f'{{"secrets": {{"{SECRET}": "{SECRET}", "OK": 5}}}}')

    with pytest.raises(UsageError) as caught:
        read_document(str(path))

    message = str(caught.value)
    assert "secrets: name #1" in message
    assert "secrets.OK" in message
    assert SECRET not in message


def test_document_on_the_command_line_is_refused_without_echo() -> None:
    inline = f'{{"secrets": {{"HF_TOKEN": "{SECRET}"}}}}'
    with pytest.raises(UsageError, match="not the document") as caught:
        read_document(inline)
    assert SECRET not in str(caught.value)


def test_document_must_be_json(tmp_path: Path) -> None:
    path = tmp_path / "creds.json"
    path.write_text(f"HF_TOKEN={SECRET}")
    with pytest.raises(UsageError, match="not JSON") as caught:
        read_document(str(path))
    assert SECRET not in str(caught.value)
    with pytest.raises(UsageError, match="cannot read"):
        read_document(str(tmp_path / "missing.json"))


def _cli(*args: str, env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKYPILOT_", "DATABASE_"))}
    env.update(env_extra)
    return run_text(
        [sys.executable, "-m", "controlplane.credentials_cli", *args], env=env, stdin="{}"
    )


def test_cli_passphrase_key_exits_2_naming_the_variable() -> None:
    passphrase = "correct horse battery staple"
    result = _cli(
        *PUT_ACME_AWS,
        env_extra={
            "SKYPILOT_CREDENTIAL_ENCRYPTION_KEY": passphrase,
            "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
        },
    )
    assert result.returncode == 2, result
    assert "SKYPILOT_CREDENTIAL_ENCRYPTION_KEY" in result.stderr
    assert passphrase not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_cli_without_database_url_exits_2() -> None:
    result = _cli("list", env_extra={})
    assert result.returncode == 2, result
    assert "DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr
