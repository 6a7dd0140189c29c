"""Read a task YAML the way SkyPilot's loader checks it, and keep what a simulated cluster needs.

The checks and their messages follow ``sky/utils/dag_utils.py``, ``sky/task.py``,
``sky/utils/common_utils.validate_schema`` and ``sky/resources.py`` for the mistakes a client
is likely to make: YAML syntax, unknown keys (with SkyPilot's "did you mean" hint), wrong
types, unparsable cpus/memory/ports and unknown clouds. Anything subtler is accepted.
"""

from __future__ import annotations

import difflib
import io
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from devtools.skypilot_sim.contract import CLUSTER_NAME_VALID_REGEX
from devtools.skypilot_sim.exceptions import SkyPilotError, sky_error

TASK_KEYS = frozenset(
    {
        "_metadata",
        "api_server_access",
        "config",
        "envs",
        "event_callback",
        "file_mounts",
        "file_mounts_mapping",
        "inputs",
        "managed_secrets",
        "name",
        "num_nodes",
        "outputs",
        "pool",
        "resources",
        "run",
        "secrets",
        "service",
        "setup",
        "volume_mounts",
        "volumes",
        "workdir",
    }
)

RESOURCES_KEYS = frozenset(
    {
        "_cluster_config_overrides",
        "_docker_login_config",
        "_is_image_managed",
        "_no_missing_accel_warnings",
        "_requires_fuse",
        "accelerator_args",
        "accelerators",
        "any_of",
        "autostop",
        "cloud",
        "cpus",
        "disk_size",
        "disk_tier",
        "ephemeral_storage",
        "image_id",
        "infra",
        "instance_type",
        "job_recovery",
        "labels",
        "local_disk",
        "max_hourly_cost",
        "memory",
        "network_tier",
        "ordered",
        "ports",
        "priority",
        "priority_class",
        "region",
        "use_spot",
        "volumes",
        "zone",
    }
)

_CLOUDS = (
    "aws|azure|gcp|ibm|lambda|scp|oci|runpod|vast|vsphere|cudo|fluidstack|paperspace|"
    "primeintellect|do|nebius|ssh|slurm|hyperbolic|seeweb|shadeform|yotta|mithril|verda"
)
INFRA_PATTERN = (
    f"^(?:(?i:({_CLOUDS}))(?:/[^/]+(?:/[^/]+)?)?|\\*(?:/[^/]+(?:/[^/]+)?)?"
    "|(?i:kubernetes|k8s)(?:/.+)?)$"
)
_CLOUD_NAMES = {
    "aws": "AWS",
    "gcp": "GCP",
    "azure": "Azure",
    "ibm": "IBM",
    "lambda": "Lambda",
    "scp": "SCP",
    "oci": "OCI",
    "runpod": "RunPod",
    "vast": "Vast",
    "vsphere": "vSphere",
    "cudo": "Cudo",
    "fluidstack": "Fluidstack",
    "paperspace": "Paperspace",
    "primeintellect": "PrimeIntellect",
    "do": "DO",
    "nebius": "Nebius",
    "ssh": "SSH",
    "slurm": "Slurm",
    "hyperbolic": "Hyperbolic",
    "seeweb": "Seeweb",
    "shadeform": "Shadeform",
    "yotta": "Yotta",
    "mithril": "Mithril",
    "verda": "Verda",
    "kubernetes": "Kubernetes",
    "k8s": "Kubernetes",
}
_DEFAULT_REGIONS = {"AWS": "us-east-1", "GCP": "us-central1", "Azure": "eastus"}
# The server parses with libyaml when it is there; its error messages differ from pure Python's.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_ENV_KEY = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_MEMORY = re.compile(r"^\d+(\.\d+)?\s*(KB|MB|GB|TB|PB|K|M|G|T|P)?[+x]?$", re.IGNORECASE)
_DURATION = re.compile(r"^(\d+)\s*([smhdw]?)$", re.IGNORECASE)
_DURATION_MINUTES = {"": 1.0, "s": 1 / 60, "m": 1.0, "h": 60.0, "d": 1440.0, "w": 10080.0}


@dataclass
class TaskSpec:
    """What a simulated cluster takes from the task: where it runs, its GPUs, ports and envs."""

    name: str | None = None
    num_nodes: int = 1
    cloud: str = "AWS"
    region: str = "us-east-1"
    zone: str | None = None
    accelerators: dict[str, int | float] = field(default_factory=dict)
    cpus: str | None = None
    memory: str | None = None
    use_spot: bool = False
    ports: list[int] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    autostop_minutes: int = -1
    autostop_down: bool = False
    envs: dict[str, str] = field(default_factory=dict)
    # Every ``any_of``/``ordered`` alternative's (cloud, region), in order; cloud/region above
    # are the first one's until a launch picks where it lands (``land``).
    alternatives: list[tuple[str, str]] = field(default_factory=list)

    def land(self, unavailable: list[str]) -> bool:
        """Pick the first alternative with capacity; False when there is none."""
        options = self.alternatives or [(self.cloud, self.region)]
        blocked = {location.lower() for location in unavailable}
        for cloud, region in options:
            if f"{cloud}/{region}".lower() not in blocked:
                self.cloud, self.region = cloud, region
                return True
        return False

    @property
    def accelerators_str(self) -> str:
        """As the real server prints it in a cluster record: ``{'A100': 1}``."""
        return str(self.accelerators)

    @property
    def request_str(self) -> str:
        """The requested resources in an error message, e.g. ``{A100:1}``."""
        if self.accelerators:
            parts = [f"{name}:{count}" for name, count in self.accelerators.items()]
        else:
            parts = [f"cpus={self.cpus or '1+'}"]
        return "{" + ", ".join(parts) + "}"


def check_cluster_name(cluster_name: str) -> None:
    """common_utils.check_cluster_name_is_valid."""
    if re.fullmatch(CLUSTER_NAME_VALID_REGEX, cluster_name) is None:
        raise sky_error(
            "InvalidClusterNameError",
            f'Cluster name "{cluster_name}" is invalid; ensure it is fully matched by regex '
            f"(e.g., only contains letters, numbers and dash): {CLUSTER_NAME_VALID_REGEX}",
        )


def parse_task(task_yaml: str) -> TaskSpec:
    """Check a task YAML (single or multi-document) and return its last task's spec.

    Raises the YAML parser's own error for bad syntax, or a SkyPilot-named error.
    """
    docs = list(yaml.load_all(io.StringIO(task_yaml), Loader=_LOADER)) or [{}]
    first = docs[0]
    if isinstance(first, dict) and set(first) in ({"name"}, {"name", "execution"}):
        docs = docs[1:] or [{"name": first["name"]}]
    spec = TaskSpec()
    for doc in docs:
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise AttributeError(f"'{type(doc).__name__}' object has no attribute 'keys'")
        spec = _task_spec(doc)
    return spec


def _invalid(prefix: str, message: str) -> SkyPilotError:
    return sky_error("InvalidSkyPilotConfigError", prefix + message)


def _check_known_keys(config: dict[Any, Any], known: frozenset[str], prefix: str) -> None:
    unknown = [key for key in config if key not in known]
    if not unknown:
        return
    hints = []
    for key in config:
        if key in known:
            continue
        similar = difflib.get_close_matches(str(key), sorted(known), 1)
        if similar:
            hints.append(f"Instead of {key!r}, did you mean {similar[0]!r}?")
        else:
            hints.append(f"Found unsupported field {key!r}.")
    raise _invalid(prefix, " ".join(hints))


def _type_error(prefix: str, value: Any, type_name: str, path: str) -> SkyPilotError:
    return _invalid(
        prefix, f"{value!r} is not of type {type_name!r}. Check problematic field(s): $.{path}"
    )


def _task_spec(raw: dict[Any, Any]) -> TaskSpec:
    prefix = "Invalid task YAML: "
    config = {k: v for k, v in raw.items() if v is not None}
    _check_known_keys(config, TASK_KEYS, prefix)
    for key in ("name", "run", "setup"):
        if key in config and not isinstance(config[key], str):
            raise _type_error(prefix, config[key], "string", key)
    num_nodes = config.get("num_nodes", 1)
    if not isinstance(num_nodes, int) or isinstance(num_nodes, bool):
        raise _type_error(prefix, num_nodes, "integer", "num_nodes")
    envs = config.get("envs") or {}
    if not isinstance(envs, dict):
        raise _type_error(prefix, envs, "object", "envs")
    for key in envs:
        if not _ENV_KEY.match(str(key)):
            raise _invalid(
                prefix,
                "The `envs` field contains invalid keys:\n"
                f"{str(key)!r} does not match any of the regexes: '{_ENV_KEY.pattern}'",
            )
    resources = config.get("resources") or {}
    if not isinstance(resources, dict):
        raise _type_error(prefix, resources, "object", "resources")
    spec = _resources_spec(resources)
    spec.name = config.get("name")
    spec.num_nodes = num_nodes
    spec.envs = {str(k): "" if v is None else str(v) for k, v in envs.items()}
    return spec


def _resources_spec(resources: dict[Any, Any]) -> TaskSpec:
    """Resources.from_yaml_config, for the first alternative of ``any_of``/``ordered``."""
    prefix = "Invalid resources YAML: "
    config = {k: v for k, v in resources.items() if v is not None}
    _check_known_keys(config, RESOURCES_KEYS, prefix)
    places: list[tuple[str, str]] = []
    for alt_key in ("any_of", "ordered"):
        alternatives = config.get(alt_key)
        if isinstance(alternatives, list) and alternatives and isinstance(alternatives[0], dict):
            base = {k: v for k, v in config.items() if k != alt_key}
            for alternative in alternatives:
                place = TaskSpec()
                _apply_infra(place, {**base, **alternative}, prefix)
                places.append((place.cloud, place.region))
            config = {**base, **alternatives[0]}
            _check_known_keys(config, RESOURCES_KEYS, prefix)
    spec = TaskSpec()
    spec.alternatives = places
    _apply_infra(spec, config, prefix)
    spec.accelerators = _accelerators(config.get("accelerators"), prefix)
    spec.cpus = _cpus(config.get("cpus"))
    spec.memory = _memory(config.get("memory"))
    spec.ports = _ports(config.get("ports"))
    spec.use_spot = bool(config.get("use_spot", False))
    labels = config.get("labels") or {}
    spec.labels = {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}
    spec.autostop_minutes, spec.autostop_down = _autostop(config.get("autostop"))
    return spec


def _apply_infra(spec: TaskSpec, config: dict[Any, Any], prefix: str) -> None:
    infra = config.get("infra")
    cloud, region, zone = config.get("cloud"), config.get("region"), config.get("zone")
    if infra is not None:
        infra = str(infra)
        if re.match(INFRA_PATTERN, infra) is None:
            raise _invalid(
                prefix,
                f"{infra!r} does not match {INFRA_PATTERN!r}. Check problematic field(s): $.infra",
            )
        parts = infra.split("/")
        if parts[0] != "*":
            cloud = parts[0]
        region = parts[1] if len(parts) > 1 else region
        zone = parts[2] if len(parts) > 2 else zone
    if cloud is not None:
        name = str(cloud).lower()
        spec.cloud = _CLOUD_NAMES.get(name, str(cloud))
    spec.region = str(region) if region else _DEFAULT_REGIONS.get(spec.cloud, "default")
    spec.zone = str(zone) if zone else None


def _accelerators(value: Any, prefix: str) -> dict[str, int | float]:
    if value is None:
        return {}
    if isinstance(value, (list, set)):
        value = next(iter(value), None)
        if value is None:
            return {}
    if isinstance(value, dict):
        return {str(k): _count(v) for k, v in value.items()}
    if isinstance(value, str):
        name, _, count = value.partition(":")
        return {name.strip(): _count(count.strip() or 1)}
    raise _invalid(
        prefix,
        f"{value!r} is not valid under any of the given schemas. "
        "Check problematic field(s): $.accelerators",
    )


def _count(value: Any) -> int | float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"Invalid accelerator count: {value!r}") from None
    return int(number) if number.is_integer() else number


def _cpus(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    try:
        number = float(text[:-1] if text.endswith("+") else text)
    except ValueError:
        raise ValueError(
            f'The "cpus" field should be either a number or a string "<number>+". Found: {value!r}'
        ) from None
    if number <= 0:
        raise ValueError(f'The "cpus" field should be positive. Found: {value!r}')
    return text


def _memory(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    if not _MEMORY.match(text):
        raise ValueError(
            '"memory" field should be a number (e.g. "16") or "<number><unit>" where unit is one '
            'of KB/MB/GB/TB/PB (e.g. "16GB") or "<number>+" for "at least". '
            f"Got: {str(value)!r}"
        )
    return text


def _ports(value: Any) -> list[int]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    ports: list[int] = []
    for item in items:
        text = str(item).strip()
        start, sep, end = text.partition("-")
        try:
            low = int(start)
            high = int(end) if sep else low
        except ValueError:
            raise ValueError(
                f'Invalid port range {text}. Please use the format "from-to", in which '
                'from <= to. e.g. "1-3".'
            ) from None
        if low > high or low < 1 or high > 65535:
            raise ValueError(
                f'Invalid port range {text}. Please use the format "from-to", in which '
                'from <= to. e.g. "1-3".'
            )
        ports.extend(p for p in range(low, min(high, low + 1000) + 1) if p not in ports)
    return ports


def _autostop(value: Any) -> tuple[int, bool]:
    """``resources.autostop``: bool, minutes, a duration like ``30m``, or a dict."""
    if value is None or value is False:
        return -1, False
    if value is True:
        return 5, False
    if isinstance(value, dict):
        minutes = _minutes(value.get("idle_minutes", 5))
        return minutes, bool(value.get("down", False))
    return _minutes(value), False


def _minutes(value: Any) -> int:
    if isinstance(value, bool):
        return 5 if value else -1
    if isinstance(value, (int, float)):
        return int(value)
    match = _DURATION.match(str(value).strip())
    if match is None:
        raise ValueError(f"Invalid autostop value: {value!r}")
    return int(int(match.group(1)) * _DURATION_MINUTES[match.group(2).lower()])
