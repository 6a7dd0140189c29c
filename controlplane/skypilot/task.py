"""Build the SkyPilot task for a vLLM node.

The task's plain settings go into the YAML ``envs:``; secret values (the tenant's HF token, R2
keys) travel separately and are only rendered into ``secrets:`` at the moment of submission
(API mode) or into an anonymous in-memory ``--secret-file`` (CLI mode). ``SkyTask.render()`` without
secrets is what may be logged or stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import SecretStr

from controlplane.credential_policy import (
    CredentialPolicyError,
    R2Keys,
    check_secret_names,
)
from controlplane.spec import NodeSpec

VLLM_PORT = 8000
IDLE_AUTOSTOP_MINUTES = 30  # as the integration guide's IdleMinutesToStop

SETUP = """\
set -euo pipefail
python -m pip install --upgrade pip
python -m pip install "torch==${TORCH_VERSION}" "vllm==${VLLM_VERSION}"
"""

# The first lines stop a server an earlier job of this node left behind (crashed or hung), so
# running the task again on the same cluster (``exec``: repair in place) restarts the model on
# the GPU it already holds. ``[v]llm`` keeps pkill from matching this script's own command line.
RUN = """\
set -euo pipefail
pkill -f "[v]llm.entrypoints.openai.api_server" || true
while pgrep -f "[v]llm.entrypoints.openai.api_server" >/dev/null; do sleep 1; done
exec python -m vllm.entrypoints.openai.api_server \\
  --host 0.0.0.0 --port "${VLLM_PORT}" \\
  --model "${MODEL_ID}" \\
  --served-model-name "${MODEL_ID}" \\
  --tensor-parallel-size "${SKYPILOT_NUM_GPUS_PER_NODE}"
"""


@dataclass(frozen=True)
class TaskSettings:
    """The system-wide values every node's task carries (from Settings)."""

    control_plane_url: str
    vllm_version: str
    torch_version: str
    r2_endpoint: str | None = None
    r2_bucket: str | None = None
    r2_access_key_id: SecretStr | None = None
    r2_secret_access_key: SecretStr | None = None


@dataclass(frozen=True)
class SkyTask:
    """A task document plus its secrets, kept apart so secrets are rendered only on purpose."""

    name: str
    document: Mapping[str, Any]
    secrets: Mapping[str, SecretStr] = field(default_factory=dict)

    @property
    def envs(self) -> Mapping[str, str]:
        envs: Mapping[str, str] = self.document.get("envs", {})
        return envs

    def render(self, *, with_secrets: bool = False) -> str:
        """The task YAML. Secret values appear only with ``with_secrets=True``."""
        doc = dict(self.document)
        if self.secrets:
            doc["secrets"] = {
                key: (value.get_secret_value() if with_secrets else None)
                for key, value in sorted(self.secrets.items())
            }
        return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)

    def secret_values(self) -> dict[str, str]:
        return {key: value.get_secret_value() for key, value in self.secrets.items()}


def build_task(
    spec: NodeSpec,
    settings: TaskSettings,
    *,
    node_secrets: Mapping[str, SecretStr] | None = None,
    tenant_r2: R2Keys | None = None,
) -> SkyTask:
    """The vLLM task for one node: resources, autostop, envs, setup/run, and its secrets.

    ``node_secrets`` are the tenant's: their names are checked again here (CredentialPolicyError),
    so a document stored before a rule existed cannot set one. ``tenant_r2``, the tenant's own
    R2 key pair, replaces the platform's; a tenant can never override the platform's names.
    """
    tenant_secrets = dict(node_secrets or {})
    try:
        check_secret_names(tenant_secrets)
    except CredentialPolicyError as exc:
        raise CredentialPolicyError(f"tenant {spec.tenant!r} credential secrets: {exc}") from None
    envs: dict[str, str] = {
        "CONTROL_PLANE_URL": settings.control_plane_url,
        "VLLM_VERSION": spec.vllm_version or settings.vllm_version,
        "TORCH_VERSION": spec.torch_version or settings.torch_version,
        "MODEL_ID": spec.model,
        "NODE_ID": spec.node_id,
        "TENANT_ID": spec.tenant,
        "VLLM_PORT": str(VLLM_PORT),
    }
    if settings.r2_endpoint:
        envs["R2_ENDPOINT"] = settings.r2_endpoint
    if settings.r2_bucket:
        envs["R2_BUCKET"] = settings.r2_bucket

    secrets: dict[str, SecretStr] = dict(tenant_secrets)
    r2_key_id, r2_secret = (
        (tenant_r2.access_key_id, tenant_r2.secret_access_key)
        if tenant_r2 is not None
        else (settings.r2_access_key_id, settings.r2_secret_access_key)
    )
    if r2_key_id is not None:
        secrets["R2_ACCESS_KEY_ID"] = r2_key_id
    if r2_secret is not None:
        secrets["R2_SECRET_ACCESS_KEY"] = r2_secret
    clash = sorted(set(secrets) & set(envs))
    if clash:
        raise ValueError(f"secret names clash with task envs: {', '.join(clash)}")

    document: dict[str, Any] = {
        "name": spec.cluster_name,
        "resources": resources(spec),
        "num_nodes": 1,
        "envs": envs,
        "setup": SETUP,
        "run": RUN,
    }
    return SkyTask(name=spec.cluster_name, document=document, secrets=secrets)


def resources(spec: NodeSpec) -> dict[str, Any]:
    """The task's ``resources:``. Several candidate locations become SkyPilot's ``ordered``
    alternatives, so one launch fails over across them in the spec's order of preference."""
    common: dict[str, Any] = {
        "accelerators": spec.accelerators,
        "use_spot": spec.spot,
        "ports": [VLLM_PORT],
        "autostop": {"idle_minutes": IDLE_AUTOSTOP_MINUTES, "down": False},
    }
    locations = spec.locations
    if len(locations) == 1:
        return {"infra": spec.infra, **common}
    return {**common, "ordered": [{"infra": location.infra} for location in locations]}
