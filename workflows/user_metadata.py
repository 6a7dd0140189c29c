"""One-line summaries a person sees on a workflow's page in the web UI (Temporal user metadata)."""

from __future__ import annotations

from controlplane.spec import NodeSpec


def node_summary(spec: NodeSpec) -> str:
    """What the node is: model, tenant, hardware and place (the workflow's static summary)."""
    return (
        f"{spec.model} for {spec.tenant} on {spec.gpu_count}x{spec.gpu_type}"
        f"{' spot' if spec.spot else ''} in {spec.provider}/{spec.region} "
        f"(deployment {spec.deployment}, replica {spec.replica})"
    )


def deployment_summary(tenant: str, name: str, model: str, replicas: int) -> str:
    return f"deployment {name} of {model} for {tenant}: {replicas} replica(s)"
