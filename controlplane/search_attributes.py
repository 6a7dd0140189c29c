"""The Temporal search attributes the control plane sets, by name: one list for every consumer.

Plain strings (no Temporal import), so the dev stack, the worker's start-up check, the test
environments and the README's ``temporal operator search-attribute create`` commands all use the
same names. All are Keyword: exact-match filters such as ``Tenant='acme' AND NodeStatus='running'``.
"""

from __future__ import annotations

TENANT = "Tenant"
DEPLOYMENT = "Deployment"
MODEL = "Model"
NODE_STATUS = "NodeStatus"
PROVIDER = "Provider"
REGION = "Region"
GPU_TYPE = "GpuType"
DEPLOYMENT_STATUS = "DeploymentStatus"

NODE_ATTRIBUTES = (TENANT, DEPLOYMENT, MODEL, NODE_STATUS, PROVIDER, REGION, GPU_TYPE)
DEPLOYMENT_ATTRIBUTES = (TENANT, DEPLOYMENT, DEPLOYMENT_STATUS)
ALL_ATTRIBUTES = tuple(dict.fromkeys((*NODE_ATTRIBUTES, *DEPLOYMENT_ATTRIBUTES)))
KEYWORD = "Keyword"


def dev_server_flags() -> list[str]:
    """``temporal server start-dev`` arguments that register every attribute at start."""
    flags: list[str] = []
    for name in ALL_ATTRIBUTES:
        flags += ["--search-attribute", f"{name}={KEYWORD}"]
    return flags


def missing(registered: dict[str, str]) -> list[str]:
    """Our attributes absent from (or not Keyword in) a namespace's ``{name: type}`` listing.

    Types may be spelled ``Keyword`` or ``INDEXED_VALUE_TYPE_KEYWORD`` (the API's enum name).
    """
    return [
        name
        for name in ALL_ATTRIBUTES
        if not registered.get(name, "").lower().endswith(KEYWORD.lower())
    ]


def create_commands(namespace: str = "default") -> list[str]:
    """The ``temporal operator search-attribute create`` command lines for a namespace."""
    return [
        f"temporal operator search-attribute create --namespace {namespace} "
        f"--name {name} --type {KEYWORD}"
        for name in ALL_ATTRIBUTES
    ]
