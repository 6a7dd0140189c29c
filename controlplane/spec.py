"""What a person asks for: a node spec, validated before anything reaches SkyPilot.

A node's identity (tenant, deployment, model, provider, region, GPU, replica) decides its node
id and its cluster name, deterministically, so a retried or duplicated start finds the same
node instead of launching a second one.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

# Clouds SkyPilot 0.14 can launch GPU nodes on, by their `infra:` prefix.
PROVIDERS = (
    "aws",
    "gcp",
    "azure",
    "kubernetes",
    "lambda",
    "runpod",
    "nebius",
    "oci",
    "paperspace",
    "fluidstack",
    "cudo",
    "vast",
    "do",
    "hyperbolic",
    "primeintellect",
    "seeweb",
)

CLUSTER_PREFIX = "cpn"
CLUSTER_NAME_MAX = 40
CLUSTER_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$")
_NODE_NAMESPACE = uuid.UUID("8f4b8f5e-6a56-4d0f-9a0e-0d6f2f7c1a11")

TenantId = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"),
]
ModelId = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$",
    ),
]
Region = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
]
GpuType = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$")
]
DeploymentName = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
]


def _known_provider(value: object) -> object:
    if isinstance(value, str) and value.strip().lower() in PROVIDERS:
        return value.strip().lower()
    raise ValueError(f"unknown provider {value!r}; expected one of: {', '.join(PROVIDERS)}")


Provider = Annotated[str, BeforeValidator(_known_provider)]


def slug(text: str, limit: int) -> str:
    """Lower-case letters, digits and single hyphens, at most ``limit`` characters."""
    cleaned = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return cleaned[:limit].strip("-")


class NodeSpec(BaseModel):
    """One GPU inference node. Plain JSON, typeable into the Temporal web UI."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: TenantId
    model: ModelId
    provider: Provider
    region: Region
    gpu_type: GpuType
    gpu_count: int = Field(ge=1, le=16)
    spot: bool = False
    deployment: DeploymentName = "default"
    replica: int = Field(default=0, ge=0, le=999)

    @property
    def identity(self) -> str:
        """The canonical text of what makes this node this node."""
        return "|".join(
            [
                self.tenant,
                self.deployment,
                self.model,
                self.provider,
                self.region,
                f"{self.gpu_type}:{self.gpu_count}",
                "spot" if self.spot else "ondemand",
                str(self.replica),
            ]
        )

    @property
    def node_id(self) -> str:
        return str(uuid.uuid5(_NODE_NAMESPACE, self.identity))

    @property
    def cluster_name(self) -> str:
        """``cpn-<tenant>-<model>-<hash>-<replica>``: readable, unique, at most 40 characters.

        The hash covers the whole identity, so truncating the readable parts never makes two
        nodes collide; the replica suffix keeps replicas apart even to the eye.
        """
        digest = hashlib.sha256(self.identity.encode()).hexdigest()[:6]
        model_tail = self.model.rsplit("/", 1)[-1]
        tail = f"{digest}-{self.replica}"
        room = CLUSTER_NAME_MAX - len(CLUSTER_PREFIX) - len(tail) - 3
        tenant_part = slug(self.tenant, min(8, room // 2)) or "t"
        model_part = slug(model_tail, room - len(tenant_part)) or "m"
        name = f"{CLUSTER_PREFIX}-{tenant_part}-{model_part}-{tail}"
        assert CLUSTER_NAME_RE.match(name), name
        return name

    @property
    def accelerators(self) -> str:
        return f"{self.gpu_type}:{self.gpu_count}"

    @property
    def infra(self) -> str:
        return f"{self.provider}/{self.region}"
