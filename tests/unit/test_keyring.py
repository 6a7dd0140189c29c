"""The AES-GCM key ring the vault and the payload codec share (issue 9: one definition)."""

from __future__ import annotations

import base64
import os

import pytest

from controlplane.keyring import (
    KEY_BYTES,
    NONCE_BYTES,
    TAG_BYTES,
    KeyRing,
    OpenFailed,
    UnknownKeyId,
    decode_key,
    decode_keys,
    key_id,
)

KEY, OLD_KEY, OTHER_KEY = os.urandom(32), os.urandom(32), os.urandom(32)
AAD = b"tenant-a/aws"


def test_a_key_is_read_from_base64_urlsafe_base64_or_hex() -> None:
    for text in (
        base64.b64encode(KEY).decode(),
        base64.urlsafe_b64encode(KEY).decode().rstrip("="),
        KEY.hex(),
        f"  {KEY.hex().upper()}\n",
    ):
        assert decode_key(text) == KEY


@pytest.mark.parametrize(
    "text", ["correct horse battery staple", base64.b64encode(os.urandom(16)).decode(), ""]
)
def test_a_passphrase_or_short_key_is_refused_without_echoing_it(text: str) -> None:
    with pytest.raises(ValueError, match="32 random bytes") as caught:
        decode_key(text)
    assert text == "" or text not in str(caught.value)


def test_previous_keys_are_a_comma_separated_list() -> None:
    text = f"{base64.b64encode(OLD_KEY).decode()}, ,{OTHER_KEY.hex()},"
    assert decode_keys(text) == [OLD_KEY, OTHER_KEY]


def test_the_key_id_is_a_stable_public_fingerprint() -> None:
    # The derivation is part of the stored format: rows and payloads record it.
    assert key_id(bytes(range(32))) == "330cbdb397a0"
    assert key_id(KEY) == key_id(bytes(KEY))
    assert key_id(KEY) != key_id(OTHER_KEY)
    assert KEY.hex()[:12] not in key_id(KEY)


def test_seal_then_open_with_the_same_associated_data() -> None:
    ring = KeyRing(KEY, use="test")
    sealed_id, nonce, ciphertext = ring.seal(b"plain", AAD)

    assert sealed_id == key_id(KEY) == ring.current_key_id
    assert len(nonce) == NONCE_BYTES
    assert len(ciphertext) == len(b"plain") + TAG_BYTES
    assert ring.open(sealed_id, nonce, ciphertext, AAD) == b"plain"
    assert ring.seal(b"plain", AAD)[1] != nonce  # a fresh nonce each time


def test_other_associated_data_does_not_open() -> None:
    ring = KeyRing(KEY, use="test")
    sealed_id, nonce, ciphertext = ring.seal(b"plain", AAD)

    for aad in (b"tenant-b/aws", None):
        with pytest.raises(OpenFailed) as caught:
            ring.open(sealed_id, nonce, ciphertext, aad)
        assert caught.value.key_id == sealed_id


def test_an_altered_ciphertext_or_nonce_does_not_open() -> None:
    ring = KeyRing(KEY, use="test")
    sealed_id, nonce, ciphertext = ring.seal(b"plain", AAD)
    flipped = ciphertext[:-1] + bytes([ciphertext[-1] ^ 1])

    with pytest.raises(OpenFailed):
        ring.open(sealed_id, nonce, flipped, AAD)
    with pytest.raises(OpenFailed):
        ring.open(sealed_id, nonce[:-1], ciphertext, AAD)  # wrong length: not a crash


def test_previous_keys_open_but_never_seal() -> None:
    old = KeyRing(OLD_KEY, use="test")
    sealed = old.seal(b"from before the rotation", AAD)
    ring = KeyRing(KEY, [OLD_KEY], use="test")

    assert ring.open(*sealed, AAD) == b"from before the rotation"
    assert ring.seal(b"new", AAD)[0] == key_id(KEY)
    assert ring.key_ids == {key_id(KEY), key_id(OLD_KEY)}


def test_an_unknown_key_id_says_which_keys_it_has() -> None:
    sealed = KeyRing(OTHER_KEY, use="test").seal(b"plain", AAD)

    with pytest.raises(UnknownKeyId) as caught:
        KeyRing(KEY, [OLD_KEY], use="test").open(*sealed, AAD)

    assert caught.value.key_id == key_id(OTHER_KEY)
    assert key_id(KEY) in str(caught.value)


def test_a_key_of_the_wrong_length_names_its_use() -> None:
    with pytest.raises(ValueError, match=f"a payload key must be {KEY_BYTES} bytes"):
        KeyRing(os.urandom(16), use="payload")
    with pytest.raises(ValueError, match="a credential key must be"):
        KeyRing(KEY, [os.urandom(31)], use="credential")


def test_the_repr_shows_key_ids_only() -> None:
    ring = KeyRing(KEY, [OLD_KEY], use="test")
    shown = repr(ring)
    assert key_id(KEY) in shown
    assert key_id(OLD_KEY) in shown
    for secret in (KEY, OLD_KEY):
        assert secret.hex() not in shown
        assert base64.b64encode(secret).decode() not in shown
