"""Connect to Temporal the same way everywhere: pydantic payloads, TLS or an API key when set.

The worker, the starter API, its command line and the tests all connect through here, so a
payload written by one is always readable by the others, encrypted or not
(TEMPORAL_PAYLOAD_ENCRYPTION_KEY, see starter/codec.py).
"""

from __future__ import annotations

from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.service import TLSConfig

from controlplane.config import Settings
from starter.codec import data_converter


def tls_config(settings: Settings) -> TLSConfig | bool:
    """mTLS from TEMPORAL_TLS_*; plain TLS when only an API key is set (Temporal Cloud)."""
    if settings.temporal_tls_cert is not None and settings.temporal_tls_key is not None:
        return TLSConfig(
            client_cert=settings.temporal_tls_cert.read_bytes(),
            client_private_key=settings.temporal_tls_key.read_bytes(),
            server_root_ca_cert=(
                settings.temporal_tls_ca.read_bytes() if settings.temporal_tls_ca else None
            ),
        )
    if settings.temporal_tls_ca is not None:
        return TLSConfig(server_root_ca_cert=settings.temporal_tls_ca.read_bytes())
    return settings.temporal_api_key is not None


async def connect(settings: Settings, *, runtime: Runtime | None = None) -> Client:
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        api_key=api_key,
        tls=tls_config(settings),
        data_converter=data_converter(settings),
        runtime=runtime,
    )
