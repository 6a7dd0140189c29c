"""Cluster names: the patterns are defined here, once, marked as ours or SkyPilot's.

**Ours** (this control plane names every cluster it launches):
``<prefix>-<tenant>-<model>-<hash>-<replica>``, at most ``CLUSTER_NAME_MAX`` characters, where
``<prefix>`` is the installation's CLUSTER_NAME_PREFIX (``CLUSTER_PREFIX_RE``, default
``CLUSTER_PREFIX``) and ``<hash>`` is the first ``CLUSTER_HASH_CHARS`` base32 characters of the
SHA-256 of the node's identity (80 bits). Nodes created before that scheme carry a 6-hex-digit
SHA-256 digest under ``cpn-`` (``legacy_name``). A cluster is this installation's only if its
name starts with ``<prefix>-`` (``carries_prefix``).

**SkyPilot's** (what its API server and `sky` accept as any cluster's name, ours or not):
``SKYPILOT_CLUSTER_NAME_RE`` (sky/skylet/constants.py ``CLUSTER_NAME_VALID_REGEX``, 0.14.1).
Our ``CLUSTER_NAME_RE`` is that pattern narrowed to what every cloud accepts.
"""

from __future__ import annotations

import base64
import hashlib
import re

# --- SkyPilot's ---------------------------------------------------------------------------------
# The pattern a cluster name must fully match (sky/skylet/constants.py CLUSTER_NAME_VALID_REGEX).
SKYPILOT_CLUSTER_NAME_PATTERN = "[a-zA-Z]([-_.a-zA-Z0-9]*[a-zA-Z0-9])?"
SKYPILOT_CLUSTER_NAME_RE = re.compile(SKYPILOT_CLUSTER_NAME_PATTERN)

# --- ours ---------------------------------------------------------------------------------------
CLUSTER_PREFIX = "cpn"  # the default of CLUSTER_NAME_PREFIX, and the legacy names' prefix
CLUSTER_NAME_MAX = 40
# SkyPilot's pattern narrowed to what every cloud accepts (GCP: lowercase, a letter first, no
# trailing hyphen), within 40 characters.
CLUSTER_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$")
# An installation's prefix: no hyphen, so one prefix is never the start of another's "<p>-".
CLUSTER_PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,7}$")
CLUSTER_HASH_CHARS = 16  # base32: 80 bits
LEGACY_HASH_CHARS = 6  # hex: 24 bits


def check_cluster_prefix(prefix: str) -> str:
    """The prefix if valid (CLUSTER_NAME_PREFIX), else a ValueError saying what is expected."""
    if not CLUSTER_PREFIX_RE.match(prefix):
        raise ValueError(
            "expected 1-8 lowercase letters or digits starting with a letter, no hyphen "
            f"(e.g. {CLUSTER_PREFIX!r} or 'stg'): it starts every cluster name of this "
            "installation, and the reconciler only touches clusters that carry it"
        )
    return prefix


def carries_prefix(cluster_name: str, prefix: str) -> bool:
    """Whether the name is one this installation (CLUSTER_NAME_PREFIX ``prefix``) gives."""
    return cluster_name.startswith(f"{prefix}-")


def slug(text: str, limit: int) -> str:
    """Lower-case letters, digits and single hyphens, at most ``limit`` characters."""
    cleaned = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return cleaned[:limit].strip("-")


def node_cluster_name(prefix: str, tenant: str, model: str, identity: str, replica: int) -> str:
    """``<prefix>-<tenant>-<model>-<hash>-<replica>``: readable, unique, at most 40 characters.

    The 80-bit hash covers the whole identity, so truncating the readable parts never makes
    two nodes collide; the replica suffix keeps replicas apart even to the eye.
    """
    check_cluster_prefix(prefix)
    digest = hashlib.sha256(identity.encode()).digest()
    hashed = base64.b32encode(digest).decode().lower()[:CLUSTER_HASH_CHARS]
    return _readable_name(prefix, tenant, model, f"{hashed}-{replica}")


def legacy_name(tenant: str, model: str, identity: str, replica: int) -> str:
    """The name nodes created before the 80-bit scheme got (24 bits of hash, ``cpn-``)."""
    digest = hashlib.sha256(identity.encode()).hexdigest()[:LEGACY_HASH_CHARS]
    return _readable_name(CLUSTER_PREFIX, tenant, model, f"{digest}-{replica}")


def _readable_name(prefix: str, tenant: str, model: str, tail: str) -> str:
    model_tail = model.rsplit("/", 1)[-1]
    room = CLUSTER_NAME_MAX - len(prefix) - len(tail) - 3
    tenant_part = slug(tenant, min(8, room // 2)) or "t"
    model_part = slug(model_tail, room - len(tenant_part)) or "m"
    name = f"{prefix}-{tenant_part}-{model_part}-{tail}"
    assert CLUSTER_NAME_RE.match(name), name
    return name
