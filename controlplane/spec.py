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
PackageVersion = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^[0-9][0-9A-Za-z.+-]{0,31}$")
]
Generation = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]{1,12}$")]
# Replica numbers are never reused; this bound keeps cluster names within 40 characters and
# is out of reach (a replica a second for 30 million years), so it is no cap in practice.
MAX_REPLICA = 10**15 - 1


def _known_provider(value: object) -> object:
    if isinstance(value, str) and value.strip().lower() in PROVIDERS:
        return value.strip().lower()
    raise ValueError(f"unknown provider {value!r}; expected one of: {', '.join(PROVIDERS)}")


Provider = Annotated[str, BeforeValidator(_known_provider)]


def slug(text: str, limit: int) -> str:
    """Lower-case letters, digits and single hyphens, at most ``limit`` characters."""
    cleaned = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return cleaned[:limit].strip("-")


class Location(BaseModel):
    """A provider/region pair a node may be launched in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: Provider
    region: Region

    @property
    def infra(self) -> str:
        return f"{self.provider}/{self.region}"


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
    replica: int = Field(default=0, ge=0, le=MAX_REPLICA)
    # Optional parts of the identity: absent, they leave a node's id as it always was.
    generation: Generation | None = Field(
        default=None, description="a deployment's generation: a reused name gets new node ids"
    )
    vllm_version: PackageVersion | None = Field(default=None, description="default: VLLM_VERSION")
    torch_version: PackageVersion | None = Field(default=None, description="default: TORCH_VERSION")
    fallback_locations: tuple[Location, ...] = Field(
        default=(),
        max_length=8,
        description="tried in order after provider/region when it has no capacity",
    )

    @property
    def identity(self) -> str:
        """The canonical text of what makes this node this node."""
        optional = [
            f"gen={self.generation}" if self.generation else "",
            f"vllm={self.vllm_version}" if self.vllm_version else "",
            f"torch={self.torch_version}" if self.torch_version else "",
            "at=" + ",".join(loc.infra for loc in self.fallback_locations)
            if self.fallback_locations
            else "",
        ]
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
                *[part for part in optional if part],
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

    @property
    def locations(self) -> tuple[Location, ...]:
        """Every candidate location, in order of preference (provider/region first)."""
        first = Location(provider=self.provider, region=self.region)
        return (first, *(loc for loc in self.fallback_locations if loc != first))
