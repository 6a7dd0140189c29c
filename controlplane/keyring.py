"""The AES-256-GCM key ring shared by the credential vault and the Temporal payload codec.

One place owns what a key is (32 bytes, given as base64 or hex), its public id (a fingerprint
stored beside each ciphertext), and sealing and opening with associated data: the current key
seals, the current or any previous (decrypt-only) key opens, picked by id. The callers keep their
own stored formats and word their own errors; the errors raised here never carry key material.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "KEY_BYTES",
    "KEY_HELP",
    "NONCE_BYTES",
    "TAG_BYTES",
    "KeyRing",
    "KeyRingError",
    "OpenFailed",
    "UnknownKeyId",
    "decode_key",
    "decode_keys",
    "key_id",
]

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_HELP = (
    "32 random bytes, base64- or hex-encoded. Generate one with: "
    'python -c "import base64, os; print(base64.b64encode(os.urandom(32)).decode())"'
)


def decode_key(text: str) -> bytes:
    """Decode a 32-byte key from hex or base64; the error never repeats the key."""
    raw = text.strip()
    candidates: list[bytes] = []
    if len(raw) == 2 * KEY_BYTES:
        with contextlib.suppress(ValueError):  # not hex: base64 is tried next
            candidates.append(bytes.fromhex(raw))
    for decoder in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            candidates.append(decoder(raw + "=" * (-len(raw) % 4)))
        except (binascii.Error, ValueError):
            continue
    for key in candidates:
        if len(key) == KEY_BYTES:
            return key
    raise ValueError(
        f"not a valid key (a passphrase or a key of the wrong length); expected {KEY_HELP}"
    )


def decode_keys(text: str) -> list[bytes]:
    """A comma-separated list of keys (previous keys); empty parts are skipped."""
    return [decode_key(part) for part in text.split(",") if part.strip()]


def key_id(key: bytes) -> str:
    """A short public fingerprint of a key, stored beside each ciphertext to pick the key."""
    return hashlib.sha256(b"controlplane-key-id:" + key).hexdigest()[:12]


class KeyRingError(Exception):
    """A ciphertext this ring cannot open. Carries the key id only, never key material."""

    def __init__(self, message: str, shown_key_id: str) -> None:
        super().__init__(message)
        self.key_id = shown_key_id


class UnknownKeyId(KeyRingError):
    """Sealed under a key that is neither the current nor a previous one."""


class OpenFailed(KeyRingError):
    """Authentication failed: altered, truncated, or bound to other associated data."""


class KeyRing:
    """Seals with the current key; opens with the current or any previous key, chosen by id."""

    def __init__(
        self, current_key: bytes, previous_keys: Iterable[bytes] = (), *, use: str
    ) -> None:
        previous = list(previous_keys)
        for key in (current_key, *previous):
            if len(key) != KEY_BYTES:
                raise ValueError(f"a {use} key must be {KEY_BYTES} bytes; expected {KEY_HELP}")
        self.current_key_id = key_id(current_key)
        # The current key wins if it also appears among the previous ones.
        self._ciphers = {key_id(key): AESGCM(key) for key in (*previous, current_key)}

    def __repr__(self) -> str:
        return f"KeyRing(current_key_id={self.current_key_id!r}, key_ids={sorted(self.key_ids)!r})"

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._ciphers)

    def seal(self, plaintext: bytes, associated_data: bytes | None) -> tuple[str, bytes, bytes]:
        """(key id, fresh random nonce, ciphertext with its tag) under the current key."""
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = self._ciphers[self.current_key_id].encrypt(nonce, plaintext, associated_data)
        return self.current_key_id, nonce, ciphertext

    def open(
        self, sealed_key_id: str, nonce: bytes, ciphertext: bytes, associated_data: bytes | None
    ) -> bytes:
        cipher = self._ciphers.get(sealed_key_id)
        if cipher is None:
            raise UnknownKeyId(
                f"key id {sealed_key_id!r} is neither the current key "
                f"({self.current_key_id!r}) nor a previous one",
                sealed_key_id,
            )
        try:
            return cipher.decrypt(nonce, ciphertext, associated_data)
        except (InvalidTag, ValueError):  # ValueError: a nonce of the wrong length
            raise OpenFailed(
                f"authentication failed under key id {sealed_key_id!r}", sealed_key_id
            ) from None
