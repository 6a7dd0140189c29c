"""Which SkyPilot interface a new node uses: the guide's gradual migration, made deterministic.

SKYPILOT_USE_API_SERVER=false sends every new node to the CLI (rollback). When true,
SKYPILOT_API_ROLLOUT_PERCENT of tenants use the API: a tenant's bucket is a hash of
its id, so the same tenant always gets the same mode within a phase, and raising the percentage
only ever moves tenants from CLI to API. The choice is recorded on the node and never revisited.
"""

from __future__ import annotations

import hashlib

from controlplane.lifecycle import LaunchMode


def tenant_bucket(tenant: str) -> int:
    """0-99, stable across processes and releases."""
    digest = hashlib.sha256(f"controlplane-rollout:{tenant}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100


def choose_mode(tenant: str, *, use_api_server: bool, rollout_percent: int) -> LaunchMode:
    if not use_api_server:
        return LaunchMode.CLI
    return LaunchMode.API if tenant_bucket(tenant) < rollout_percent else LaunchMode.CLI
