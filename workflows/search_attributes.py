"""Typed search-attribute keys and the values a node or deployment workflow carries.

The starter sets them when it starts a workflow (only when the namespace has them registered:
``controlplane.search_attributes``); a workflow that was started with them keeps its status
attribute current by upserting on every transition. A workflow started without them (from the
web UI, or on a namespace that lacks them) never upserts, so it cannot fail on an unknown name.
"""

from __future__ import annotations

from collections.abc import Callable

from temporalio import workflow
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

from controlplane import search_attributes as names
from controlplane.lifecycle import NodeStatus
from controlplane.spec import NodeSpec

TENANT = SearchAttributeKey.for_keyword(names.TENANT)
DEPLOYMENT = SearchAttributeKey.for_keyword(names.DEPLOYMENT)
MODEL = SearchAttributeKey.for_keyword(names.MODEL)
NODE_STATUS = SearchAttributeKey.for_keyword(names.NODE_STATUS)
PROVIDER = SearchAttributeKey.for_keyword(names.PROVIDER)
REGION = SearchAttributeKey.for_keyword(names.REGION)
GPU_TYPE = SearchAttributeKey.for_keyword(names.GPU_TYPE)
DEPLOYMENT_STATUS = SearchAttributeKey.for_keyword(names.DEPLOYMENT_STATUS)

# The patch id of the upserts (histories recorded before them replay without).
PATCH = "search-attributes-v1"


def node_attributes(spec: NodeSpec, status: NodeStatus) -> TypedSearchAttributes:
    """Every attribute of a node workflow, as set at start."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(TENANT, spec.tenant),
            SearchAttributePair(DEPLOYMENT, spec.deployment),
            SearchAttributePair(MODEL, spec.model),
            SearchAttributePair(NODE_STATUS, status.value),
            SearchAttributePair(PROVIDER, spec.provider),
            SearchAttributePair(REGION, spec.region),
            SearchAttributePair(GPU_TYPE, spec.gpu_type),
        ]
    )


def deployment_attributes(tenant: str, name: str, status: str) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(TENANT, tenant),
            SearchAttributePair(DEPLOYMENT, name),
            SearchAttributePair(DEPLOYMENT_STATUS, status),
        ]
    )


def carried() -> bool:
    """Whether this workflow was started with our attributes (so the namespace has them)."""
    return workflow.info().typed_search_attributes.get(TENANT) is not None


def upsert_status(
    key: SearchAttributeKey[str], value: str, patched: Callable[[str], bool] = workflow.patched
) -> None:
    """Upsert a status attribute, if this workflow carries our attributes (patch-gated;
    ``patched``: the workflow's own check, a patch bundle's for the node)."""
    if not (carried() and patched(PATCH)):
        return
    if workflow.info().typed_search_attributes.get(key) != value:
        workflow.upsert_search_attributes([key.value_set(value)])
