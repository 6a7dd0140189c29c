"""What a person asks for: a node spec, validated before anything reaches SkyPilot.

A node's identity (tenant, deployment, model, provider, region, GPU, replica) decides its node
id and its cluster name, deterministically, so a retried or duplicated start finds the same
node instead of launching a second one.

Collision resistance (docs/security.md, finding 2): the node id is a UUIDv5 of the canonical
identity (122 bits; the identity's fields cannot contain its ``|`` separator, so two identities
never share a text). Workflow ids carry the whole node id. A cluster name carries 80 bits of
SHA-256 of the identity: among 10^6 nodes the birthday bound puts the chance of any two names
colliding below n^2/2^81 = 4e-13, and a name that does collide is refused when intent is
recorded (the names are unique in the database): an error, never an attach or a launch.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from controlplane.cluster_names import CLUSTER_PREFIX, legacy_name, node_cluster_name

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


class Location(BaseModel):
    """A provider/region pair a node may be launched in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: Provider
    region: Region

    @property
    def infra(self) -> str:
        return f"{self.provider}/{self.region}"


class Placement(BaseModel):
    """What runs and where: the fields a node's spec and a deployment's share, first in both."""

    tenant: TenantId
    model: ModelId
    provider: Provider
    region: Region
    gpu_type: GpuType
    gpu_count: int = Field(ge=1, le=16)
    spot: bool = False


class NodeSpec(Placement):
    """One GPU inference node. Plain JSON, typeable into the Temporal web UI."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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
        """The cluster name under the default prefix; workers use ``cluster_name_for``."""
        return self.cluster_name_for(CLUSTER_PREFIX)

    def cluster_name_for(self, prefix: str) -> str:
        """Our name for the node's cluster under ``prefix`` (controlplane.cluster_names)."""
        return node_cluster_name(prefix, self.tenant, self.model, self.identity, self.replica)

    @property
    def legacy_cluster_name(self) -> str:
        """The name nodes created before the 80-bit scheme got (24 bits of hash, ``cpn-``).

        Kept only so replays and the starter find nodes that still run under it.
        """
        return legacy_name(self.tenant, self.model, self.identity, self.replica)

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
