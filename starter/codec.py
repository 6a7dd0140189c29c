"""Payload encryption for everything the control plane sends through Temporal.

:class:`EncryptionCodec` seals each serialized payload with AES-256-GCM under the current key
(``TEMPORAL_PAYLOAD_ENCRYPTION_KEY``) and a random 12-byte nonce, and records the key's public
fingerprint (``controlplane.keyring.key_id``) in the payload's metadata. Decoding picks the key by
that id among the current key and ``TEMPORAL_PAYLOAD_PREVIOUS_KEYS``, so keys rotate without
making old histories unreadable. Payloads that are not encrypted pass through untouched, so
histories written before encryption was turned on still decode.

The stored format is the one of Temporal's encryption samples (nonce || ciphertext+tag, metadata
``encoding: binary/encrypted`` and ``encryption-key-id``), so codecs in other SDKs can read it.

Errors name the key id and the setting to fix; they never carry key material or plaintext.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

from controlplane.config import Settings
from controlplane.keyring import NONCE_BYTES, TAG_BYTES, KeyRing, OpenFailed

__all__ = [
    "ENCODING",
    "ENCRYPTED_ENCODING",
    "KEY_ID_METADATA",
    "EncryptionCodec",
    "PayloadDecryptionError",
    "codec_from_settings",
    "data_converter",
    "is_encrypted",
]

ENCODING = "encoding"
ENCRYPTED_ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
KEY_VARIABLE = "TEMPORAL_PAYLOAD_ENCRYPTION_KEY"
PREVIOUS_KEYS_VARIABLE = "TEMPORAL_PAYLOAD_PREVIOUS_KEYS"


class PayloadDecryptionError(ValueError):
    """A payload this process cannot decrypt. The message is safe to log and to show."""


def is_encrypted(payload: Payload) -> bool:
    return payload.metadata.get(ENCODING) == ENCRYPTED_ENCODING


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM with key ids: seals with the current key, opens with current or previous."""

    def __init__(self, current_key: bytes, previous_keys: Iterable[bytes] = ()) -> None:
        self._ring = KeyRing(current_key, previous_keys, use="payload")
        self.current_key_id = self._ring.current_key_id
        self._current_id_bytes = self.current_key_id.encode()

    def __repr__(self) -> str:
        return (
            f"EncryptionCodec(current_key_id={self.current_key_id!r}, "
            f"key_ids={sorted(self.key_ids)!r})"
        )

    @property
    def key_ids(self) -> frozenset[str]:
        return self._ring.key_ids

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(payload) for payload in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        _, nonce, sealed = self._ring.seal(payload.SerializeToString(), None)
        return Payload(
            metadata={ENCODING: ENCRYPTED_ENCODING, KEY_ID_METADATA: self._current_id_bytes},
            data=nonce + sealed,
        )

    def decrypt(self, payload: Payload) -> Payload:
        if not is_encrypted(payload):
            return payload
        raw_id = payload.metadata.get(KEY_ID_METADATA)
        if raw_id is None:
            raise PayloadDecryptionError(
                "cannot decrypt a payload: it is marked binary/encrypted but carries no "
                f"{KEY_ID_METADATA} metadata, so it was not written by this control plane's codec"
            )
        shown_id = raw_id.decode("utf-8", errors="replace")[:64]
        if shown_id not in self._ring.key_ids:
            raise PayloadDecryptionError(
                f"cannot decrypt a payload sealed with key id {shown_id!r}: it is neither the "
                f"current key ({self.current_key_id!r}, {KEY_VARIABLE}) nor one of the previous "
                f"keys; add the key with that id to {PREVIOUS_KEYS_VARIABLE} (comma-separated) "
                "and restart this process"
            )
        data = payload.data
        if len(data) < NONCE_BYTES + TAG_BYTES:
            raise PayloadDecryptionError(
                f"cannot decrypt a payload sealed with key id {shown_id!r}: it is truncated "
                f"({len(data)} bytes, less than a nonce and a tag)"
            )
        try:
            plaintext = self._ring.open(shown_id, data[:NONCE_BYTES], data[NONCE_BYTES:], None)
        except OpenFailed:
            raise PayloadDecryptionError(
                f"cannot decrypt a payload sealed with key id {shown_id!r}: authentication "
                "failed, so the payload was altered or corrupted after it was sealed"
            ) from None
        try:
            return Payload.FromString(plaintext)
        except DecodeError:
            raise PayloadDecryptionError(
                f"a payload sealed with key id {shown_id!r} decrypted to something that is not "
                "a Temporal payload"
            ) from None


def codec_from_settings(settings: Settings) -> EncryptionCodec | None:
    """The codec for TEMPORAL_PAYLOAD_ENCRYPTION_KEY (+ previous keys); None when it is unset."""
    key = settings.payload_encryption_key
    if key is None:
        return None
    return EncryptionCodec(key, settings.payload_previous_keys)


def data_converter(settings: Settings) -> DataConverter:
    """Pydantic payloads, encrypted when a payload key is configured.

    With encryption on, failure messages and stack traces move into the (encrypted) encoded
    attributes too, so an exception's text does not reach the server in clear.
    """
    codec = codec_from_settings(settings)
    if codec is None:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
