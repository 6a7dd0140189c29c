"""Blobs sealed before the key ring existed still open (issue 9: one AES-GCM key ring).

The fixture was written by the vault and the payload codec at commit 0eb76a9, before both moved
onto ``controlplane.keyring``: rows in the credential table and payloads in Temporal histories
sealed then must open now, under the current key and as a previous (decrypt-only) key.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.common.v1 import Payload

from controlplane.db.models import Sealed
from controlplane.vault import Vault
from starter.codec import EncryptionCodec

FIXTURE = Path(__file__).parent.parent / "fixtures" / "keyring" / "sealed_before_keyring.json"
DOCUMENT: dict[str, Any] = json.loads(FIXTURE.read_text())
UNRELATED_KEY = bytes(range(100, 132))


def _b(text: str) -> bytes:
    return base64.b64decode(text)


def _payload(document: dict[str, Any]) -> Payload:
    metadata = {name: _b(value) for name, value in document["metadata"].items()}
    return Payload(metadata=metadata, data=_b(document["data"]))


@pytest.mark.parametrize("as_previous", [False, True], ids=["current", "previous"])
@pytest.mark.parametrize("blob", DOCUMENT["vault"]["blobs"], ids=["key-a", "key-b"])
def test_an_old_credential_row_opens(blob: dict[str, str], as_previous: bool) -> None:
    key = _b(blob["key"])
    vault = Vault(UNRELATED_KEY, [key]) if as_previous else Vault(key)
    sealed = Sealed(
        key_id=blob["key_id"], nonce=_b(blob["nonce"]), ciphertext=_b(blob["ciphertext"])
    )

    opened = vault.open(DOCUMENT["vault"]["tenant"], DOCUMENT["vault"]["provider"], sealed)

    assert opened.reveal() == DOCUMENT["vault"]["plaintext"]
    assert vault.needs_rotation(sealed) is as_previous


def test_an_old_credential_row_still_refuses_another_tenant() -> None:
    """The associated data is unchanged too: the old row is bound to its tenant."""
    blob = DOCUMENT["vault"]["blobs"][0]
    sealed = Sealed(
        key_id=blob["key_id"], nonce=_b(blob["nonce"]), ciphertext=_b(blob["ciphertext"])
    )

    with pytest.raises(Exception, match="authentication failed"):
        Vault(_b(blob["key"])).open("other-tenant", DOCUMENT["vault"]["provider"], sealed)


@pytest.mark.parametrize("as_previous", [False, True], ids=["current", "previous"])
@pytest.mark.parametrize("blob", DOCUMENT["codec"]["blobs"], ids=["key-a", "key-b"])
def test_an_old_encrypted_payload_decodes(blob: dict[str, Any], as_previous: bool) -> None:
    key = _b(blob["key"])
    codec = EncryptionCodec(UNRELATED_KEY, [key]) if as_previous else EncryptionCodec(key)

    decoded = codec.decrypt(_payload(blob))

    assert decoded == _payload(DOCUMENT["codec"]["inner"])


def test_a_new_payload_has_the_old_shape() -> None:
    """What the codec writes now is what it wrote then: same metadata, nonce || ct+tag."""
    blob = DOCUMENT["codec"]["blobs"][1]
    codec = EncryptionCodec(_b(blob["key"]))

    fresh = codec.encrypt(_payload(DOCUMENT["codec"]["inner"]))

    assert dict(fresh.metadata) == {k: _b(v) for k, v in blob["metadata"].items()}
    assert len(fresh.data) == len(_b(blob["data"]))
    assert codec.decrypt(fresh) == _payload(DOCUMENT["codec"]["inner"])
