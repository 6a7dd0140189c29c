"""The deployment files: docker-compose.yml, the Dockerfile, Prometheus alerts and Grafana.

Nothing here needs Docker or the network. The compose file is validated against the Compose
Specification's JSON Schema vendored in deploy/schema/ (after interpolation, as Docker Compose
does), and additionally with ``docker compose config`` when a Compose v2 binary is installed.
PromQL is parsed with ``promql-parser`` (dev extra) and, when Debian's ``prometheus`` package
provides ``promtool``, the rules are checked and unit-tested with it too.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from controlplane import metric_names
from controlplane.config import ConfigError, Settings, load_settings
from controlplane.metric_names import ALL_SERIES, CONTROLPLANE_SERIES, HISTOGRAMS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DEPLOY = ROOT / "deploy"
SCHEMA = DEPLOY / "schema" / "compose-spec.json"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "tests" / "alerts_test.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboard.json"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
RUNBOOKS = ROOT / "docs" / "runbooks"

# Valid values for every variable the compose file interpolates, none of them real.
SAMPLE_ENV = {
    "POSTGRES_PASSWORD": "0123456789abcdef0123456789abcdef",
    "SKYPILOT_CREDENTIAL_ENCRYPTION_KEY": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
    "TEMPORAL_PAYLOAD_ENCRYPTION_KEY": "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=",
    "CODEC_SERVER_TOKEN": "codec-token-for-tests-only-0123456789",
    "GRAFANA_ADMIN_PASSWORD": "grafana-password-for-tests",
    "SKYPILOT_SERVICE_ACCOUNT_TOKEN": "sky_testtoken0123456789",
}
REQUIRED_SECRETS = (
    "POSTGRES_PASSWORD",
    "SKYPILOT_CREDENTIAL_ENCRYPTION_KEY",
    "TEMPORAL_PAYLOAD_ENCRYPTION_KEY",
    "CODEC_SERVER_TOKEN",
    "GRAFANA_ADMIN_PASSWORD",
)
# Services that run this repository's image and read controlplane.config.Settings.
CONTROLPLANE_SERVICES = ("migrate", "worker", "codec-server")
# Variables those services may set although Settings has no field for them, with the reason.
EXTRA_VARIABLES: dict[str, str] = {}

SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|_PWD$|SECRET|TOKEN$|_KEY$|_KEYS$|_KEY_ID$)")
INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)
ONLY_INTERPOLATION = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?::?(?:\?[^}]*|-))?\}$")
REQUIRED_ALERTS = {
    "SkyPilotApiFailureRate",
    "NodeLaunchToReadySlow",
    "OrphanClustersFound",
    "CleanupFailedNodes",
    "NodesUnhealthy",
    "ControlPlaneWorkerDown",
}
RUNBOOK_URL = re.compile(
    r"^docs/runbooks/(?P<file>rollout|rollback|key-rotation|troubleshooting)\.md(#[a-z0-9-]+)?$"
)
# Grafana's variables, replaced by a duration before PromQL is parsed.
GRAFANA_RANGES = re.compile(
    r"\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}"
)
# Labels Prometheus attaches to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})


class MissingVariable(Exception):
    pass


def require(module: str, package: str) -> ModuleType:
    """Import a dev dependency, or fail (not skip) saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        pytest.fail(
            f"the Python package {package!r} is missing: it is in the dev extras, "
            "install them with pip install -e '.[dev]'"
        )


# --- compose helpers ---------------------------------------------------------------------------
def interpolate_text(text: str, env: Mapping[str, str]) -> str:
    """Docker Compose's interpolation: $$, $VAR, ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?e}, ..."""

    def substitute(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("braced") or match.group("named")
        op, arg = match.group("op"), match.group("arg") or ""
        value = env.get(name)
        if op is None:
            return value or ""
        if op == ":-":
            return value if value else arg
        if op == "-":
            return value if value is not None else arg
        if op == ":+":
            return arg if value else ""
        if op == "+":
            return arg if value is not None else ""
        if (op == ":?" and not value) or (op == "?" and value is None):
            raise MissingVariable(f"{name}: {arg}")
        return value or ""

    return INTERPOLATION.sub(substitute, text)


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate_text(node, env)
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    return node


def raw_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def compose(env: Mapping[str, str] = SAMPLE_ENV) -> dict[str, Any]:
    data = interpolate(raw_compose(), env)
    assert isinstance(data, dict)
    return data


def services(data: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    found = (data if data is not None else raw_compose())["services"]
    assert isinstance(found, dict)
    return found


def environment(service: Mapping[str, Any]) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, None) for item in env)
        return {name: value for name, value in pairs}
    return {name: None if value is None else str(value) for name, value in env.items()}


def set_values(service: Mapping[str, Any]) -> dict[str, str]:
    """The variables a service sets (pass-through ones, without a value, left out)."""
    return {k: v for k, v in environment(service).items() if v is not None}


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def one_shot(service: Mapping[str, Any]) -> bool:
    """A job that runs to completion: it says so with restart: "no"."""
    return service.get("restart") == "no"


def compose_cli() -> list[str] | None:
    """A Compose v2 command, if one is installed (the plugin or a standalone binary)."""
    candidates = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    for command in candidates:
        try:
            out = subprocess.run(
                [*command, "version", "--short"], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and re.match(r"v?2\.", out.stdout.strip()):
            return command
    return None


# --- PromQL helpers ----------------------------------------------------------------------------
def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERTS.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def dashboard_exprs() -> list[str]:
    return [
        target["expr"]
        for panel in all_panels(dashboard()["panels"])
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def alert_exprs() -> list[str]:
    return [str(rule["expr"]) for rule in alert_rules()]


def promql(expr: str) -> str:
    """A Grafana query as plain PromQL."""
    return GRAFANA_RANGES.sub("5m", expr)


PROMQL_KEYWORDS = frozenset(
    {
        *("by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"),
        *("and", "or", "unless", "atan2", "inf", "nan"),
        *("sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values"),
        *("bottomk", "topk", "quantile", "limitk", "limit_ratio"),
    }
)


def metric_names_in(expr: str) -> set[str]:
    """Metric names of a PromQL expression, by regex (no parser needed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', promql(expr))
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in PROMQL_KEYWORDS:
            continue
        if re.fullmatch(r"\d+[smhdwy]", name):
            continue
        names.add(name)
    return names


def base_series(name: str) -> str | None:
    """The ALL_SERIES entry a queried name belongs to, or None."""
    if name in ALL_SERIES:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name.removesuffix(suffix) in HISTOGRAMS:
            return name.removesuffix(suffix)
    return None


def labels_of(name: str) -> frozenset[str]:
    base = base_series(name)
    labels = set(ALL_SERIES.get(base, ())) if base else set()
    if name.endswith("_bucket"):
        labels.add("le")
    return frozenset(labels | TARGET_LABELS)


def parsed_selectors(pp: ModuleType, node: Any) -> list[Any]:
    found: list[Any] = []

    def visit(child: Any) -> None:
        if isinstance(child, pp.VectorSelector):
            found.append(child)

    pp.walk(node, visit)
    return found


# === docker-compose.yml ========================================================================
def test_compose_validates_against_the_compose_spec_schema() -> None:
    jsonschema = require("jsonschema", "jsonschema")
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors
    )
    assert "version" not in raw_compose(), "the Compose Specification has no version: key"


def test_the_vendored_schema_is_the_documented_one() -> None:
    digest = hashlib.sha256(SCHEMA.read_bytes()).hexdigest()
    notes = (SCHEMA.parent / "README.md").read_text()
    assert digest in notes, "deploy/schema/README.md must record the schema's SHA-256"
    assert (SCHEMA.parent / "LICENSE").read_text().lstrip().startswith("Apache License")


def test_docker_compose_config_accepts_the_file() -> None:
    command = compose_cli()
    if command is None:
        pytest.skip("no Docker Compose v2 installed (docker compose / docker-compose)")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    for profile in ([], ["--profile", "sim"]):
        ok = subprocess.run(
            [*command, "-f", str(COMPOSE), *profile, "config", "--quiet"],
            env={**env, **SAMPLE_ENV},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ok.returncode == 0, ok.stderr
    missing = subprocess.run(
        [*command, "-f", str(COMPOSE), "config", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode != 0
    assert "required variable" in missing.stderr


@pytest.mark.parametrize("secret", REQUIRED_SECRETS)
def test_compose_refuses_to_start_without_each_secret(secret: str) -> None:
    env = {k: v for k, v in SAMPLE_ENV.items() if k != secret}
    with pytest.raises(MissingVariable, match=secret):
        compose(env)
    with pytest.raises(MissingVariable, match=secret):
        compose({**env, secret: ""})


def test_every_service_has_a_healthcheck() -> None:
    all_services = services()
    for name, service in all_services.items():
        check = service.get("healthcheck") or {}
        if check.get("disable"):
            # Only one-shot jobs go without: whoever needs them waits for their exit code.
            assert one_shot(service), f"{name}: only a one-shot job may disable its healthcheck"
            waiting = {
                other: depends_on(s)[name]
                for other, s in all_services.items()
                if name in depends_on(s)
            }
            assert waiting, f"{name}: a one-shot job nobody waits for"
            assert set(waiting.values()) == {"service_completed_successfully"}, (name, waiting)
            continue
        test = check.get("test")
        assert test, f"{name}: no healthcheck"
        assert isinstance(test, list), f"{name}: healthcheck test must be a list"
        assert test[0] in ("CMD", "CMD-SHELL"), (name, test)


def test_depends_on_points_at_services_that_can_satisfy_it() -> None:
    all_services = services()
    for name, service in all_services.items():
        for dependency, condition in depends_on(service).items():
            assert dependency in all_services, f"{name} depends on unknown {dependency}"
            target = all_services[dependency]
            if condition == "service_healthy":
                assert (target.get("healthcheck") or {}).get("test"), (name, dependency)
            elif condition == "service_completed_successfully":
                assert one_shot(target), (name, dependency)
            else:
                pytest.fail(f"{name} -> {dependency}: use a health or completion condition")
            assert "profiles" not in target, f"{name} depends on profile-only {dependency}"


def test_worker_waits_for_migrations_and_a_healthy_temporal() -> None:
    worker = services()["worker"]
    assert depends_on(worker)["migrate"] == "service_completed_successfully"
    assert depends_on(worker)["temporal"] == "service_healthy"
    migrate = services()["migrate"]
    assert migrate["entrypoint"] == ["python", "-m", "controlplane.db", "migrate"]
    assert depends_on(migrate) == {"postgres": "service_healthy"}


IMAGE = re.compile(r"^(?P<repo>[a-z0-9./_-]+):(?P<tag>[A-Za-z0-9._-]+)$")


def test_images_are_pinned() -> None:
    for name, service in services(compose()).items():
        image = service.get("image")
        assert image, f"{name}: no image"
        match = IMAGE.match(image)
        assert match, f"{name}: {image!r} has no tag"
        tag = match.group("tag")
        assert "latest" not in tag, f"{name}: {image!r}"
        if "build" in service:
            continue  # this repository's image, built locally
        assert re.match(r"^v?\d+\.\d+", tag), f"{name}: {image!r} is not pinned to a version"
        raw_image = services()[name]["image"]
        assert "$" not in raw_image, f"{name}: a registry image must not come from a variable"


def test_no_literal_secret_values() -> None:
    for name, service in services().items():
        for variable, value in environment(service).items():
            if value is None:
                continue  # passed through from the environment
            if SECRET_NAME.search(variable):
                assert ONLY_INTERPOLATION.match(value), (
                    f"{name}.{variable} must be ${{VAR:?message}} or ${{VAR:-}}, not {value!r}"
                )
            for credentials in re.finditer(r"://[^/:@\s]+:([^@\s]+)@", value):
                assert ONLY_INTERPOLATION.match(credentials.group(1)), (
                    f"{name}.{variable}: a password in a URL must come from a variable"
                )
    text = COMPOSE.read_text()
    assert not re.search(r"sky_[A-Za-z0-9]{8,}", text), "a literal SkyPilot token"
    assert not re.search(r"[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=", text), "a literal key"


def test_controlplane_services_set_only_known_variables() -> None:
    fields = set(Settings.model_fields)
    for name in CONTROLPLANE_SERVICES:
        for variable in environment(services()[name]):
            assert variable.lower() in fields or variable in EXTRA_VARIABLES, (
                f"{name}: {variable} is neither a Settings field nor a documented extra"
            )


def test_worker_environment_loads_and_turns_payload_encryption_on() -> None:
    worker = set_values(services(compose())["worker"])
    settings = load_settings(worker)
    assert settings.database_url is not None
    assert "@postgres:5432/" in settings.database_url
    assert settings.temporal_address == "temporal:7233"
    assert settings.skypilot_api_server_url == "http://skypilot:46580"
    assert settings.skypilot_use_api_server is True
    assert settings.payload_encryption_key is not None
    assert settings.encryption_key is not None
    assert settings.metrics_host == "0.0.0.0"
    assert settings.metrics_port == 9464
    simulated = set_values(
        services(compose({**SAMPLE_ENV, "SKYPILOT_API_SERVER_URL": "http://skypilot-sim:46580"}))[
            "worker"
        ]
    )
    assert load_settings(simulated).skypilot_api_server_url == "http://skypilot-sim:46580"


def test_worker_without_a_token_stops_with_the_variables_name() -> None:
    env = {k: v for k, v in SAMPLE_ENV.items() if k != "SKYPILOT_SERVICE_ACCOUNT_TOKEN"}
    worker = set_values(services(compose(env))["worker"])
    with pytest.raises(ConfigError, match="SKYPILOT_SERVICE_ACCOUNT_TOKEN"):
        load_settings(worker)


def test_codec_server_and_migrate_environments_load() -> None:
    all_services = services(compose())
    codec = load_settings(set_values(all_services["codec-server"]))
    assert codec.codec_server_token is not None
    assert codec.payload_encryption_key is not None
    assert codec.codec_server_host == "0.0.0.0"
    published = {str(p).rsplit(":", 2)[-2] for p in all_services["codec-server"]["ports"]}
    assert str(codec.codec_server_port) in published
    ui = environment(all_services["temporal-ui"])
    assert ui["TEMPORAL_CODEC_ENDPOINT"] == f"http://localhost:{codec.codec_server_port}"
    ui_host_ports = {str(p).rsplit(":", 2)[-2] for p in all_services["temporal-ui"]["ports"]}
    for origin in codec.codec_server_cors_origin_list:
        assert origin.rsplit(":", 1)[-1] in ui_host_ports, origin
    migrate = load_settings(set_values(all_services["migrate"]))
    assert migrate.database_url == load_settings(set_values(all_services["worker"])).database_url


def test_simulator_profile_serves_the_workers_token() -> None:
    sim = services()["skypilot-sim"]
    assert sim["profiles"] == ["sim"]
    command = " ".join(sim["entrypoint"])
    assert "devtools.skypilot_sim" in command
    assert "--host 0.0.0.0 --port 46580" in command
    assert "--token" not in command  # argv is visible to ps: the token comes from the env
    worker_token = environment(services()["worker"])["SKYPILOT_SERVICE_ACCOUNT_TOKEN"]
    assert environment(sim)["SKYPILOT_SIM_TOKENS"] == worker_token


def test_real_skypilot_server_runs_as_documented() -> None:
    sky = services()["skypilot"]
    assert sky["image"].startswith("berkeleyskypilot/skypilot:")
    assert sky["command"] == ["sky", "api", "start", "--deploy", "--foreground"]
    assert environment(sky)["ENABLE_SERVICE_ACCOUNTS"] == "true"
    assert "/api/health" in " ".join(sky["healthcheck"]["test"])


def test_bind_mounts_exist() -> None:
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume["source"]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"


def test_prometheus_scrapes_the_worker_and_loads_the_alerts() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker_port = set_values(services()["worker"])["METRICS_PORT"]
    targets = [t for c in jobs["controlplane-worker"]["static_configs"] for t in c["targets"]]
    assert targets == [f"worker:{worker_port}"]
    assert config["rule_files"] == ["alerts.yml"]
    mounts = services()["prometheus"]["volumes"]
    assert "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts


# === Dockerfile ================================================================================
def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile_pins_its_base_image() -> None:
    instructions = dockerfile_instructions()
    args = dict(
        rest.split("=", 1) for keyword, rest in instructions if keyword == "ARG" and "=" in rest
    )
    stages: set[str] = set()
    for keyword, rest in instructions:
        if keyword != "FROM":
            continue
        parts = rest.split()
        image = parts[0]
        variable = re.fullmatch(r"\$\{?(\w+)\}?", image)
        if variable:
            image = args[variable.group(1)]
        if image not in stages:
            assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?", image), image
        if len(parts) == 3 and parts[1].upper() == "AS":
            stages.add(parts[2])


def test_dockerfile_runs_as_a_non_root_user() -> None:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    users = [rest for keyword, rest in instructions[last_from:] if keyword == "USER"]
    assert users, "the final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]


def test_dockerfile_entrypoint_healthcheck_and_sky_cli_option() -> None:
    instructions = dockerfile_instructions()
    rests = {keyword: rest for keyword, rest in instructions}
    assert json.loads(rests["ENTRYPOINT"]) == ["python", "worker.py"]
    healthcheck = rests["HEALTHCHECK"]
    for needed in ("/metrics", "METRICS_PORT", "9464"):
        assert needed in healthcheck
    assert ("ARG", "WITH_SKY_CLI=false") in instructions
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert '"skypilot==0.14.1"' in runs or "skypilot==0.14.1" in runs
    assert "pip install ." in runs


def test_docker_build_context_has_what_the_dockerfile_copies() -> None:
    ignored = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", ".git", ".venv", "tests"} <= ignored
    for keyword, rest in dockerfile_instructions():
        if keyword != "COPY" or rest.startswith("--from"):
            continue
        for source in rest.split()[:-1]:
            assert (ROOT / source).exists(), source
            assert source not in ignored, f"{source} is copied but excluded by .dockerignore"


# === metric names ==============================================================================
def test_metric_names_module_is_consistent() -> None:
    constants = {
        value
        for name, value in vars(metric_names).items()
        if name.isupper() and isinstance(value, str) and not name.startswith("_")
    }
    assert constants == set(ALL_SERIES)
    assert set(HISTOGRAMS) <= set(ALL_SERIES)
    for name, labels in ALL_SERIES.items():
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", name), name
        assert len(set(labels)) == len(labels), name
        assert "le" not in labels
        if name.endswith("_total"):
            assert name not in HISTOGRAMS


def test_controlplane_metrics_export_exactly_the_listed_series() -> None:
    metrics = importlib.import_module("controlplane.metrics")
    registry = metrics.Metrics().registry
    exported: dict[str, str] = {}
    for family in registry.collect():
        name = family.name + "_total" if family.type == "counter" else family.name
        exported[name] = family.type
    assert set(exported) == set(CONTROLPLANE_SERIES)
    for name, kind in exported.items():
        assert (kind == "histogram") == (name in HISTOGRAMS), name


def test_controlplane_metrics_carry_the_listed_labels() -> None:
    metrics = importlib.import_module("controlplane.metrics").Metrics()
    for name, collector in metrics.registry._names_to_collectors.items():
        base = name.removesuffix("_created")
        series = base if base in ALL_SERIES else base + "_total"
        if series in ALL_SERIES:
            assert tuple(collector._labelnames) == ALL_SERIES[series], series


def _string_literals(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


PRODUCT_CODE = [
    *sorted(
        path
        for top in ("controlplane", "activities", "workflows", "starter", "devtools", "scripts")
        for path in (ROOT / top).rglob("*.py")
        if path != ROOT / "controlplane" / "metric_names.py"
    ),
    ROOT / "worker.py",
]


@pytest.mark.parametrize("path", PRODUCT_CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_metric_name_is_spelled_outside_metric_names(path: Path) -> None:
    """A series is named once: code refers to metric_names' constants, never to the text."""
    spellings = {*ALL_SERIES, *(n.removesuffix("_total") for n in ALL_SERIES)}
    assert not _string_literals(path) & spellings


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_queried_metrics_exist(source: str) -> None:
    exprs = alert_exprs() if source == "alerts" else dashboard_exprs()
    assert exprs
    for expr in exprs:
        for name in metric_names_in(expr):
            assert name == "up" or base_series(name), f"{name!r} (in {expr!r}) is not listed"


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_promql_parses_and_uses_known_labels(source: str) -> None:
    pp = require("promql_parser", "promql-parser")
    exprs = alert_exprs() if source == "alerts" else dashboard_exprs()
    for expr in exprs:
        try:
            tree = pp.parse(promql(expr))
        except ValueError as exc:
            pytest.fail(f"{expr!r}: {exc}")
        selectors = parsed_selectors(pp, tree)
        names = {s.name for s in selectors}
        assert names == metric_names_in(expr), expr  # the regex and the parser agree
        for selector in selectors:
            if selector.name == "up":
                continue
            for matcher in selector.matchers.matchers:
                assert matcher.name in labels_of(selector.name), (expr, matcher.name)

        def check_grouping(node: Any, expr: str = expr) -> None:
            if isinstance(node, pp.AggregateExpr) and node.modifier is not None:
                inner = parsed_selectors(pp, node.expr)
                known = frozenset().union(*(labels_of(s.name) for s in inner))
                for label in node.modifier.labels:
                    assert label in known, (expr, label)

        pp.walk(tree, check_grouping)


def test_regex_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, operation) (rate(a_bucket{operation="x"}'
        "[$__rate_interval]))) / on (operation) group_left sum(b_total) > bool 1 and up == 0"
    )
    assert metric_names_in(expr) == {"a_bucket", "b_total", "up"}


# === alerts ====================================================================================
def test_required_alerts_have_severity_summary_and_runbook() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    assert set(rules) >= REQUIRED_ALERTS
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        annotations = rule["annotations"]
        assert annotations["summary"].strip(), name
        match = RUNBOOK_URL.match(annotations["runbook_url"])
        assert match, f"{name}: {annotations['runbook_url']!r}"
        if RUNBOOKS.is_dir():
            assert (RUNBOOKS / f"{match.group('file')}.md").is_file(), name


def test_alert_expressions_match_the_brief() -> None:
    rules = {rule["alert"]: " ".join(str(rule["expr"]).split()) for rule in alert_rules()}
    assert "skypilot_api_errors_total[5m]" in rules["SkyPilotApiFailureRate"]
    assert "skypilot_api_requests_total[5m]" in rules["SkyPilotApiFailureRate"]
    assert "> 0.10" in rules["SkyPilotApiFailureRate"]
    assert rules["NodeLaunchToReadySlow"].startswith("histogram_quantile(0.95,")
    assert rules["NodeLaunchToReadySlow"].endswith("> 900")
    assert "increase(controlplane_orphans_found_total[1h])" in rules["OrphanClustersFound"]
    assert rules["CleanupFailedNodes"].endswith("> 0")
    assert rules["NodesUnhealthy"] == 'max(controlplane_nodes{state="unhealthy"}) > 0'
    assert 'up{job="controlplane-worker"} == 0' in rules["ControlPlaneWorkerDown"]
    down = next(r for r in alert_rules() if r["alert"] == "ControlPlaneWorkerDown")
    assert down["for"] == "2m"


PROMTOOL_HINT = "promtool is not installed (Debian: apt-get install prometheus)"


@pytest.mark.parametrize(
    "args",
    [
        ["check", "rules", str(ALERTS)],
        ["check", "config", str(PROMETHEUS_CONFIG)],
        ["test", "rules", str(ALERT_TESTS)],
    ],
    ids=["check-rules", "check-config", "test-rules"],
)
def test_promtool(args: list[str]) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip(PROMTOOL_HINT)
    result = subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


# === Grafana ===================================================================================
def test_dashboard_structure() -> None:
    data = dashboard()
    assert data["schemaVersion"] >= 36
    assert data["uid"]
    assert data["title"]
    datasource_uid = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]["uid"]
    panels = list(all_panels(data["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        assert panel["title"].strip()
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == datasource_uid, panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert refs, panel["title"]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource_uid, panel["title"]


def test_dashboard_shows_every_listed_series() -> None:
    used = {base_series(n) for expr in dashboard_exprs() for n in metric_names_in(expr)}
    missing = set(ALL_SERIES) - used
    assert not missing, f"no panel shows {sorted(missing)}"


def test_grafana_provisioning_is_mounted() -> None:
    grafana = services()["grafana"]
    mounts = grafana["volumes"]
    assert any(m.startswith("./deploy/grafana/dashboard.json:") for m in mounts)
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "controlplane.yml").read_text()
    )
    path = provider["providers"][0]["options"]["path"]
    assert any(m.split(":")[1].startswith(path + "/") for m in mounts if "dashboard.json" in m)
