"""The node spec the tests start from: one valid spec, changed per test by keyword."""

from __future__ import annotations

import uuid
from typing import Any

from controlplane.spec import NodeSpec
from workflows.models import DeploymentSpec

BASE: dict[str, Any] = {
    "tenant": "acme",
    "model": "NousResearch/Meta-Llama-3-8B-Instruct",
    "provider": "aws",
    "region": "us-east-1",
    "gpu_type": "A100",
    "gpu_count": 1,
}


def node_spec(**overrides: Any) -> NodeSpec:
    """acme's Llama-3-8B on 1 A100 in aws/us-east-1, with ``overrides`` (any NodeSpec field)."""
    return NodeSpec(**{**BASE, **overrides})


def new_spec(**overrides: Any) -> NodeSpec:
    """``node_spec`` in a deployment of its own (``it-<random>``): a node id no test shares."""
    return node_spec(**{"deployment": f"it-{uuid.uuid4().hex[:8]}", **overrides})


def deployment_spec(*, name: str, **overrides: Any) -> DeploymentSpec:
    """The same spec as a deployment named ``name``, with ``overrides``."""
    return DeploymentSpec(**{**BASE, "name": name, **overrides})
