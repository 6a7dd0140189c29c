"""The node spec the tests start from: one valid spec, changed per test by keyword."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import SecretStr

from controlplane.skypilot.task import TaskSettings
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


def task_settings(**overrides: Any) -> TaskSettings:
    """The platform's task settings, R2 configured, with ``overrides`` (any TaskSettings field)."""
    fields: dict[str, Any] = {
        "control_plane_url": "https://cp.example.com",
        "vllm_version": "0.11.0",
        "torch_version": "2.8.0",
        "r2_endpoint": "https://r2.example.com",
        "r2_bucket": "models",
        "r2_access_key_id": SecretStr("r2-access-key-id-value"),
        "r2_secret_access_key": SecretStr("r2-secret-access-key-value"),
    }
    return TaskSettings(**{**fields, **overrides})
