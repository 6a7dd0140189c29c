"""Payload encryption: the codec, its settings, and the data converter every client uses."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import pytest
from pydantic import BaseModel
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DefaultFailureConverter,
    DefaultFailureConverterWithEncodedAttributes,
)
from temporalio.exceptions import ApplicationError

from controlplane.config import ConfigError, Settings, decode_key, key_id, load_settings
from starter.codec import (
    ENCRYPTED_ENCODING,
    KEY_ID_METADATA,
    EncryptionCodec,
    PayloadDecryptionError,
    codec_from_settings,
    data_converter,
)
from starter.codec_server import is_loopback, plan
from tests.support.settings_errors import refused

MARKER = "tenant-acme-very-private-marker-7f3a"
OLD_KEY = os.urandom(32)
NEW_KEY = os.urandom(32)
TOKEN = "codec-token-for-unit-tests-0123456789"


class Spec(BaseModel):
    tenant: str
    gpus: int


def key_text(key: bytes) -> str:
    return base64.b64encode(key).decode()


def key_forms(key: bytes) -> list[str]:
    """Every way a key could leak into a message."""
    return [
        key_text(key),
        base64.urlsafe_b64encode(key).decode(),
        key.hex(),
        repr(key),
        key_text(key).rstrip("="),
    ]


def plain(value: object) -> Payload:
    return pydantic_data_converter.payload_converter.to_payloads([value])[0]


def encrypted_settings(**extra: str) -> Settings:
    return load_settings({"TEMPORAL_PAYLOAD_ENCRYPTION_KEY": key_text(NEW_KEY), **extra})


# --- the codec ---


async def test_round_trip_through_the_data_converter() -> None:
    converter = data_converter(encrypted_settings())
    values = [Spec(tenant=MARKER, gpus=2), {"note": MARKER}, 42, None]
    payloads = await converter.encode(values)
    assert all(p.metadata["encoding"] == ENCRYPTED_ENCODING for p in payloads)
    decoded = await converter.decode(payloads, [Spec, dict, int, type(None)])
    assert decoded == values


async def test_encrypted_payload_carries_the_key_id_and_no_plaintext() -> None:
    codec = EncryptionCodec(NEW_KEY)
    original = plain({"tenant": MARKER})
    [sealed] = await codec.encode([original])
    assert dict(sealed.metadata) == {
        "encoding": b"binary/encrypted",
        KEY_ID_METADATA: key_id(NEW_KEY).encode(),
    }
    wire = sealed.SerializeToString()
    assert MARKER.encode() not in wire
    assert b"json/plain" not in wire  # the inner encoding is sealed too
    assert NEW_KEY not in wire
    # A fresh nonce each time: the same payload never seals to the same bytes.
    [again] = await codec.encode([original])
    assert again.data != sealed.data
    assert sealed.data[:12] != again.data[:12]
    assert await codec.decode([sealed, again]) == [original, original]


async def test_rotation_old_payloads_decode_with_the_previous_key() -> None:
    old_codec = EncryptionCodec(OLD_KEY)
    [old_sealed] = await old_codec.encode([plain(MARKER)])

    rotated = codec_from_settings(
        encrypted_settings(TEMPORAL_PAYLOAD_PREVIOUS_KEYS=f"{key_text(OLD_KEY)}")
    )
    assert rotated is not None
    assert await rotated.decode([old_sealed]) == [plain(MARKER)]
    # New payloads are sealed with the new key only.
    [new_sealed] = await rotated.encode([plain(MARKER)])
    assert new_sealed.metadata[KEY_ID_METADATA] == key_id(NEW_KEY).encode()
    assert await EncryptionCodec(NEW_KEY).decode([new_sealed]) == [plain(MARKER)]


async def test_rotation_without_the_previous_key_fails_naming_the_key_id_and_setting() -> None:
    [old_sealed] = await EncryptionCodec(OLD_KEY).encode([plain(MARKER)])
    codec = EncryptionCodec(NEW_KEY)
    with pytest.raises(PayloadDecryptionError) as caught:
        await codec.decode([old_sealed])
    message = str(caught.value)
    assert key_id(OLD_KEY) in message
    assert key_id(NEW_KEY) in message
    assert "TEMPORAL_PAYLOAD_PREVIOUS_KEYS" in message
    for form in key_forms(OLD_KEY) + key_forms(NEW_KEY):
        assert form not in message


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


@pytest.mark.parametrize("where", ["nonce", "ciphertext", "tag"])
async def test_tampered_payload_is_rejected(where: str) -> None:
    codec = EncryptionCodec(NEW_KEY)
    [sealed] = await codec.encode([plain(MARKER)])
    index = {"nonce": 3, "ciphertext": 20, "tag": len(sealed.data) - 1}[where]
    tampered = Payload(metadata=sealed.metadata, data=flip(sealed.data, index))
    with pytest.raises(PayloadDecryptionError, match="altered or corrupted") as caught:
        await codec.decode([tampered])
    assert key_id(NEW_KEY) in str(caught.value)
    assert MARKER not in str(caught.value)


async def test_truncated_payload_and_missing_key_id_are_rejected() -> None:
    codec = EncryptionCodec(NEW_KEY)
    [sealed] = await codec.encode([plain(MARKER)])
    truncated = Payload(metadata=sealed.metadata, data=sealed.data[:20])
    with pytest.raises(PayloadDecryptionError, match="truncated"):
        await codec.decode([truncated])
    anonymous = Payload(metadata={"encoding": ENCRYPTED_ENCODING}, data=sealed.data)
    with pytest.raises(PayloadDecryptionError, match="encryption-key-id"):
        await codec.decode([anonymous])


async def test_swapping_the_key_id_to_another_known_key_fails_authentication() -> None:
    codec = EncryptionCodec(NEW_KEY, [OLD_KEY])
    [sealed] = await codec.encode([plain(MARKER)])
    relabelled = Payload(
        metadata={"encoding": ENCRYPTED_ENCODING, KEY_ID_METADATA: key_id(OLD_KEY).encode()},
        data=sealed.data,
    )
    with pytest.raises(PayloadDecryptionError, match="altered or corrupted"):
        await codec.decode([relabelled])


async def test_unencrypted_payloads_pass_through_untouched() -> None:
    codec = EncryptionCodec(NEW_KEY)
    payloads = [plain({"tenant": MARKER}), plain(None), Payload(metadata={}, data=b"raw")]
    assert await codec.decode(payloads) == payloads
    # And a history written before encryption decodes through the encrypting converter.
    converter = data_converter(encrypted_settings())
    assert await converter.decode([plain({"tenant": MARKER})], [dict]) == [{"tenant": MARKER}]


async def test_errors_never_contain_key_material_or_plaintext() -> None:
    codec = EncryptionCodec(NEW_KEY, [OLD_KEY])
    [sealed] = await codec.encode([plain(MARKER)])
    messages = [repr(codec)]
    for bad in (
        Payload(metadata=sealed.metadata, data=flip(sealed.data, 15)),
        Payload(metadata=sealed.metadata, data=sealed.data[:10]),
        Payload(
            metadata={"encoding": ENCRYPTED_ENCODING, KEY_ID_METADATA: b"0123456789ab"},
            data=sealed.data,
        ),
    ):
        with pytest.raises(PayloadDecryptionError) as caught:
            await codec.decode([bad])
        messages.append(str(caught.value))
        messages.append(repr(caught.value))
    with pytest.raises(ValueError, match="32 bytes") as short:
        EncryptionCodec(NEW_KEY[:16])
    messages.append(str(short.value))
    for message in messages:
        for form in key_forms(NEW_KEY) + key_forms(OLD_KEY) + key_forms(NEW_KEY[:16]):
            assert form not in message
        assert MARKER not in message


async def test_failure_messages_and_stack_traces_are_encrypted() -> None:
    converter = data_converter(encrypted_settings())
    assert converter.failure_converter_class is DefaultFailureConverterWithEncodedAttributes
    try:
        raise ApplicationError(f"launch failed for {MARKER}", {"tenant": MARKER})
    except ApplicationError as error:
        failure = Failure()
        await converter.encode_failure(error, failure)
    wire = failure.SerializeToString()
    assert MARKER.encode() not in wire
    assert failure.message == "Encoded failure"
    assert failure.encoded_attributes.metadata["encoding"] == ENCRYPTED_ENCODING
    restored = await converter.decode_failure(failure)
    assert MARKER in str(restored)


def test_converter_is_plain_pydantic_when_no_key_is_set() -> None:
    converter = data_converter(load_settings({}))
    assert converter is pydantic_data_converter
    assert converter.payload_codec is None
    assert converter.failure_converter_class is DefaultFailureConverter


def test_converter_with_a_key_keeps_pydantic_and_adds_the_codec() -> None:
    converter = data_converter(encrypted_settings())
    assert isinstance(converter.payload_codec, EncryptionCodec)
    assert converter.payload_codec.current_key_id == key_id(NEW_KEY)
    assert converter.payload_converter_class is pydantic_data_converter.payload_converter_class


# --- settings ---


def test_new_settings_defaults() -> None:
    settings = load_settings({})
    assert settings.temporal_payload_encryption_key is None
    assert settings.payload_encryption_key is None
    assert settings.payload_previous_keys == []
    assert settings.codec_server_token is None
    assert settings.codec_server_host == "127.0.0.1"
    assert settings.codec_server_port == 8081
    assert settings.codec_server_cors_origin_list == [
        "http://localhost:8233",
        "http://127.0.0.1:8233",
    ]


def test_keys_are_read_in_hex_or_base64_and_previous_keys_are_a_list() -> None:
    settings = load_settings(
        {
            "TEMPORAL_PAYLOAD_ENCRYPTION_KEY": NEW_KEY.hex(),
            "TEMPORAL_PAYLOAD_PREVIOUS_KEYS": f"{key_text(OLD_KEY)}, {os.urandom(32).hex()}",
            "CODEC_SERVER_TOKEN": TOKEN,
            "CODEC_SERVER_HOST": "0.0.0.0",
            "CODEC_SERVER_PORT": "9999",
            "CODEC_SERVER_CORS_ORIGINS": "https://temporal.example.com/, http://localhost:8080",
        }
    )
    assert settings.payload_encryption_key == NEW_KEY
    assert settings.payload_previous_keys[0] == OLD_KEY
    assert len(settings.payload_previous_keys) == 2
    assert settings.codec_server_port == 9999
    assert settings.codec_server_cors_origin_list == [
        "https://temporal.example.com",
        "http://localhost:8080",
    ]


@pytest.mark.parametrize(
    ("env", "variable", "expected"),
    [
        (
            {"TEMPORAL_PAYLOAD_ENCRYPTION_KEY": "correct horse battery staple"},
            "TEMPORAL_PAYLOAD_ENCRYPTION_KEY",
            "not a valid key",
        ),
        (
            {
                "TEMPORAL_PAYLOAD_ENCRYPTION_KEY": key_text(NEW_KEY),
                "TEMPORAL_PAYLOAD_PREVIOUS_KEYS": f"{key_text(OLD_KEY)},hunter2hunter2",
            },
            "TEMPORAL_PAYLOAD_PREVIOUS_KEYS",
            "key #2 of 2",
        ),
        (
            {"TEMPORAL_PAYLOAD_PREVIOUS_KEYS": key_text(OLD_KEY)},
            "TEMPORAL_PAYLOAD_ENCRYPTION_KEY",
            "previous keys only decrypt",
        ),
        ({"CODEC_SERVER_TOKEN": "short-secret"}, "CODEC_SERVER_TOKEN", "at least 16"),
        (
            {"CODEC_SERVER_TOKEN": "a token with spaces in it!"},
            "CODEC_SERVER_TOKEN",
            "without spaces",
        ),
        ({"CODEC_SERVER_PORT": "70000"}, "CODEC_SERVER_PORT", ""),
        ({"CODEC_SERVER_CORS_ORIGINS": "*"}, "CODEC_SERVER_CORS_ORIGINS", "no wildcard"),
        (
            {"CODEC_SERVER_CORS_ORIGINS": "http://localhost:8233/ui"},
            "CODEC_SERVER_CORS_ORIGINS",
            "not an origin",
        ),
    ],
)
def test_bad_settings_name_the_variable_and_hide_the_value(
    env: dict[str, str], variable: str, expected: str
) -> None:
    message = refused(env, variable, expected)
    for name, value in env.items():
        if name != "CODEC_SERVER_PORT" and "CORS" not in name:
            assert value not in message
            for part in value.split(","):
                assert part.strip() not in message


def test_new_secrets_are_redacted_and_hidden_from_repr() -> None:
    previous = key_text(OLD_KEY)
    settings = encrypted_settings(TEMPORAL_PAYLOAD_PREVIOUS_KEYS=previous, CODEC_SERVER_TOKEN=TOKEN)
    secrets = settings.secret_values()
    assert key_text(NEW_KEY) in secrets
    assert previous in secrets
    assert TOKEN in secrets
    for text in (repr(settings), str(settings), str(settings.model_dump())):
        assert key_text(NEW_KEY) not in text
        assert previous not in text
        assert TOKEN not in text


def test_the_documented_generators_make_valid_secrets() -> None:
    # docs/codec-server.md tells operators to run exactly these.
    key = subprocess.run(
        [
            sys.executable,
            "-c",
            "import base64, os; print(base64.b64encode(os.urandom(32)).decode())",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    token = subprocess.run(
        [sys.executable, "-c", "import secrets; print(secrets.token_urlsafe(32))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    settings = load_settings({"TEMPORAL_PAYLOAD_ENCRYPTION_KEY": key, "CODEC_SERVER_TOKEN": token})
    assert settings.payload_encryption_key == decode_key(key)
    assert settings.codec_server_token is not None


# --- the codec server's start-up rules ---


def test_codec_server_refuses_to_start_without_a_token() -> None:
    with pytest.raises(ConfigError, match="CODEC_SERVER_TOKEN: not set"):
        plan(encrypted_settings())


def test_codec_server_refuses_to_start_without_a_key() -> None:
    with pytest.raises(ConfigError, match="TEMPORAL_PAYLOAD_ENCRYPTION_KEY: not set"):
        plan(load_settings({"CODEC_SERVER_TOKEN": TOKEN}))


def test_insecure_no_auth_only_on_loopback() -> None:
    config = plan(encrypted_settings(), insecure_no_auth=True)
    assert config.token is None
    assert config.host == "127.0.0.1"
    for host in ("0.0.0.0", "192.168.1.10", "::", "codec.example.com"):
        with pytest.raises(ConfigError, match="only allowed on a loopback host"):
            plan(encrypted_settings(), host=host, insecure_no_auth=True)
    with pytest.raises(ConfigError, match="CODEC_SERVER_TOKEN is set as well"):
        plan(encrypted_settings(CODEC_SERVER_TOKEN=TOKEN), insecure_no_auth=True)


def test_token_mode_may_bind_any_interface() -> None:
    config = plan(encrypted_settings(CODEC_SERVER_TOKEN=TOKEN), host="0.0.0.0", port=9000)
    assert config.token == TOKEN
    assert (config.host, config.port) == ("0.0.0.0", 9000)
    assert TOKEN not in repr(config.codec)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("localhost.example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_json_is_the_inner_encoding() -> None:
    # What the codec server hands back to the UI after decoding: ordinary json/plain payloads.
    payload = plain({"tenant": MARKER})
    assert payload.metadata["encoding"] == b"json/plain"
    assert json.loads(payload.data) == {"tenant": MARKER}
