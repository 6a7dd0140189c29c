"""Secrets never appear in workflow history, logs or errors, while the launch still gets them.

Known, distinctive values stand in for every secret the system handles: the SkyPilot
service-account token, the credential encryption key, a tenant's stored HF_TOKEN and the R2
keys. A node goes through its whole life (launch → running → terminate) and a second launch
fails on the simulator's injected fault: in API mode driven through the starter API, in CLI mode
(the `sky` CLI) driven through `python -m starter`; a third test has the API server reject the
worker's token. Then every workflow of the task queue is exported with the Temporal CLI exactly
as an operator would (`temporal workflow list`, then `show` and `describe` for each run), and the
exports, every log record (root logger at DEBUG, the worker's included), everything written to
stdout/stderr (the SDK core logs there), the starter's output, the errors raised to the caller
and the rows in Postgres are searched for each secret in plain text and in base64 at every
alignment (payloads in an export are base64). The simulator's record of each launch shows the
credential did arrive, as the task's ``secrets:``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import text
from temporalio.client import WorkflowFailureError

from controlplane.config import Settings, decode_key, load_settings
from controlplane.db.engine import create_engine
from controlplane.db.repository import CredentialRepository
from controlplane.lifecycle import LaunchMode, NodeStatus
from controlplane.spec import NodeSpec
from controlplane.vault import CredentialPayload, CredentialStore, Vault
from devtools.skypilot_sim.config import DEFAULT_LAUNCH_FAILURE_TYPES
from devtools.skypilot_sim.server import SimulatorServer
from starter.api import ControlPlane
from tests.integration.conftest import Stack
from tests.support.in_process_worker import in_process_worker
from tests.support.processes import run_text
from tests.support.specs import node_spec
from tests.support.temporal_env import dev_server_path
from workflows.models import NodeView
from workflows.node import NodeWorkflow

HF_TOKEN = "hf_SECRET-tenant-token-6f1c2b9a4d7e8035c1aa"
R2_ACCESS_KEY_ID = "R2ACCESS-secret-id-93e7b1c4d2a6f805"
R2_SECRET_ACCESS_KEY = "r2-SECRET-access-key-0d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a"
WRONG_TOKEN = "sky_SECRET-rejected-service-account-token-4a1f"
MODEL = "NousResearch/Meta-Llama-3-8B-Instruct"
LAUNCH_FAILURE = "CloudUserIdentityError"  # not transient: the workflow does not relaunch
TEMPORAL = dev_server_path()  # the `temporal` binary is the CLI too
REPO = Path(__file__).resolve().parents[2]


# --- the secrets and every form they could take --------------------------------------------------
def base64_forms(value: bytes) -> set[str]:
    """What ``value`` looks like inside any base64 text, whatever the alignment.

    Inside a longer payload the secret starts at byte offset 0, 1 or 2 of a 3-byte group; for
    each, the characters that depend only on the secret's bytes are searched for (the first and
    last group, which mix in neighbouring bytes, are dropped).
    """
    forms: set[str] = set()
    for offset in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(b"\0" * offset + value).decode().rstrip("=")
            start = 4 if offset else 0
            core = encoded[start : len(encoded) - 4]
            assert len(core) >= 16, "secret too short to recognise in base64"
            forms.add(core)
    return forms


@dataclass
class Secret:
    name: str
    value: str
    forms: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.forms = {self.value, *base64_forms(self.value.encode())}

    def found_in(self, haystack: str) -> list[str]:
        return sorted(form for form in self.forms if form in haystack)


def key_secret(name: str, key_text: str) -> Secret:
    """The key as configured, plus its raw bytes as hex and base64."""
    secret = Secret(name, key_text)
    raw = decode_key(key_text)
    secret.forms |= {raw.hex(), raw.hex().upper(), *base64_forms(raw)}
    return secret


def assert_clean(secrets: Iterable[Secret], where: str, haystack: str) -> None:
    leaks = {s.name: found for s in secrets if (found := s.found_in(haystack))}
    if leaks:
        snippets = []
        for found in leaks.values():
            at = haystack.find(found[0])
            snippets.append(haystack[max(0, at - 300) : at + 100])
        pytest.fail(f"secrets in {where}: {sorted(leaks)}\n" + "\n---\n".join(snippets))


# --- capturing every log record ------------------------------------------------------------------
class EverythingHandler(logging.Handler):
    """Keeps every record in full: message, arguments, extras and formatted exception."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.records = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.records += 1
        parts = [record.name, record.getMessage(), repr(vars(record))]
        if record.exc_info and record.exc_info[1] is not None:
            parts.append(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            parts.append(record.stack_info)
        self.lines.append(" | ".join(parts))


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[EverythingHandler]:
    """caplog at DEBUG on the root logger, plus a handler on every logger that does not
    propagate (so nothing escapes), the worker's loggers included."""
    caplog.set_level(logging.DEBUG)
    handler = EverythingHandler()
    targets = [logging.getLogger()]
    for name in [*logging.root.manager.loggerDict, "worker", "temporalio", "activities"]:
        logger = logging.getLogger(name)
        if not logger.propagate:
            targets.append(logger)
    for logger in targets:
        logger.addHandler(handler)
    previous = logging.getLogger("worker").level
    logging.getLogger("worker").setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        for logger in targets:
            logger.removeHandler(handler)
        logging.getLogger("worker").setLevel(previous)


# --- the stack with secrets ----------------------------------------------------------------------
@dataclass
class SecretStack:
    stack: Stack
    settings: Settings
    tenant: str
    secrets: list[Secret]

    @property
    def control(self) -> ControlPlane:
        return self.stack.control

    @property
    def simulator(self) -> SimulatorServer:
        return self.stack.simulator

    def spec(self) -> NodeSpec:
        return node_spec(tenant=self.tenant, model=MODEL, deployment=f"sec-{uuid.uuid4().hex[:8]}")


def secret_env(stack: Stack, **overrides: str) -> dict[str, str]:
    return {
        **stack.env,
        "R2_ENDPOINT": "https://r2.example.com",
        "R2_BUCKET": "model-cache",
        "R2_ACCESS_KEY_ID": R2_ACCESS_KEY_ID,
        "R2_SECRET_ACCESS_KEY": R2_SECRET_ACCESS_KEY,
        "LOG_LEVEL": "DEBUG",
        **overrides,
    }


async def store_credential(settings: Settings, tenant: str) -> None:
    engine = create_engine(settings.database_url or "")
    try:
        store = CredentialStore(Vault.from_settings(settings), CredentialRepository(engine))
        await store.put(
            tenant, "aws", CredentialPayload(workspace=None, secrets={"HF_TOKEN": HF_TOKEN})
        )
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def running_worker(stack: Stack, settings: Settings) -> AsyncIterator[None]:
    """The worker in-process, built exactly as worker.py builds it, from ``settings``."""
    async with in_process_worker(stack.client, settings):
        yield


def stack_secrets(env: dict[str, str]) -> list[Secret]:
    return [
        Secret("SKYPILOT_SERVICE_ACCOUNT_TOKEN", env["SKYPILOT_SERVICE_ACCOUNT_TOKEN"]),
        key_secret("SKYPILOT_CREDENTIAL_ENCRYPTION_KEY", env["SKYPILOT_CREDENTIAL_ENCRYPTION_KEY"]),
        Secret("HF_TOKEN", HF_TOKEN),
        Secret("R2_ACCESS_KEY_ID", R2_ACCESS_KEY_ID),
        Secret("R2_SECRET_ACCESS_KEY", R2_SECRET_ACCESS_KEY),
    ]


@pytest.fixture
async def secret_stack(stack: Stack) -> SecretStack:
    tenant = f"sec{uuid.uuid4().hex[:10]}"
    settings = load_settings(secret_env(stack))
    await store_credential(settings, tenant)
    return SecretStack(stack, settings, tenant, stack_secrets(stack.env))


# --- the scenarios -------------------------------------------------------------------------------
async def full_lifecycle(ss: SecretStack, mode: LaunchMode) -> NodeSpec:
    spec = ss.spec()
    started = await ss.control.launch_node(spec, launch_mode=mode)
    view = await ss.control.wait_for_node(
        started.workflow_id, until={NodeStatus.RUNNING}, timeout=timedelta(seconds=60)
    )
    assert view.status is NodeStatus.RUNNING, view
    response = await ss.control.terminate_node(started.workflow_id)
    assert response.status is NodeStatus.TERMINATED, response
    handle = ss.stack.client.get_workflow_handle_for(NodeWorkflow.run, started.workflow_id)
    assert (await handle.result()).status is NodeStatus.TERMINATED
    return spec


def error_chain(error: BaseException | None) -> list[str]:
    out: list[str] = []
    while error is not None:
        out += [type(error).__name__, str(error), repr(error)]
        error = error.__cause__ or error.__context__
    return out


async def failing_launch(ss: SecretStack, mode: LaunchMode) -> tuple[NodeSpec, list[str]]:
    """A launch SkyPilot fails (not transiently): compensated, recorded failed, raised."""
    spec = ss.spec()
    ss.simulator.set_faults(fail_next_launches=20, launch_failure_types=[LAUNCH_FAILURE])
    try:
        started = await ss.control.launch_node(spec, launch_mode=mode)
        handle = ss.stack.client.get_workflow_handle_for(NodeWorkflow.run, started.workflow_id)
        with pytest.raises(WorkflowFailureError) as failure:
            await asyncio.wait_for(handle.result(), 90)
    finally:
        ss.simulator.set_faults(
            fail_next_launches=0, launch_failure_types=list(DEFAULT_LAUNCH_FAILURE_TYPES)
        )
    view = await ss.control.node_status(started.workflow_id)
    assert view.status is NodeStatus.FAILED, view
    assert LAUNCH_FAILURE in (view.error or ""), view
    return spec, [*error_chain(failure.value), view.model_dump_json()]


def starter_env(settings_env: dict[str, str]) -> dict[str, str]:
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SKYPILOT_", "TEMPORAL_", "R2_", "NODE_")) and k != "DATABASE_URL"
    }
    return {**inherited, **settings_env}


async def starter(ss: SecretStack, *args: str) -> tuple[int, dict[str, Any], str]:
    """`python -m starter ...` with the secret-carrying environment: code, JSON out, all text."""
    done = await asyncio.to_thread(
        run_text,
        [sys.executable, "-m", "starter", *args],
        env=starter_env(secret_env(ss.stack)),
        timeout=120,
    )
    text = done.stdout.strip()
    try:
        payload: dict[str, Any] = json.loads(text) if text else {}
    except json.JSONDecodeError:  # `--wait` redirected: progress JSON lines, the result last
        payload = json.loads(text.splitlines()[-1])
    return done.returncode, payload, done.stdout + "\n" + done.stderr


def launch_args(spec: NodeSpec, mode: LaunchMode) -> list[str]:
    return [
        "launch",
        *("--tenant", spec.tenant, "--model", spec.model, "--provider", spec.provider),
        *("--region", spec.region, "--gpu", spec.accelerators, "--deployment", spec.deployment),
        *("--mode", mode.value, "--wait", "90"),
    ]


async def cli_lifecycle(ss: SecretStack, mode: LaunchMode) -> tuple[NodeSpec, list[str]]:
    """The same life through `python -m starter`, as a person at a shell drives it."""
    spec = ss.spec()
    code, launched, launch_text = await starter(ss, *launch_args(spec, mode))
    assert code == 0, launch_text
    assert launched["node"]["status"] == NodeStatus.RUNNING.value, launch_text
    code, answer, terminate_text = await starter(
        ss, "terminate", "--workflow-id", launched["workflow_id"]
    )
    assert code == 0, terminate_text
    assert answer["status"] == NodeStatus.TERMINATED.value, terminate_text
    return spec, [launch_text, terminate_text]


async def cli_failing_launch(ss: SecretStack, mode: LaunchMode) -> tuple[NodeSpec, list[str]]:
    spec = ss.spec()
    ss.simulator.set_faults(fail_next_launches=20, launch_failure_types=[LAUNCH_FAILURE])
    try:
        code, launched, text = await starter(ss, *launch_args(spec, mode))
    finally:
        ss.simulator.set_faults(
            fail_next_launches=0, launch_failure_types=list(DEFAULT_LAUNCH_FAILURE_TYPES)
        )
    assert code == 1, text  # failed
    assert launched["node"]["status"] == NodeStatus.FAILED.value, text
    assert LAUNCH_FAILURE in launched["node"]["error"], text
    return spec, [text]


# --- exporting histories as an operator would ----------------------------------------------------
async def temporal(stack: Stack, *args: str) -> str:
    done = await asyncio.to_thread(
        run_text,
        [TEMPORAL, *args, "--address", stack.env["TEMPORAL_ADDRESS"], "--namespace", "default"],
    )
    assert done.returncode == 0, f"temporal {' '.join(args)}: {done.stderr}"
    return done.stdout


def json_documents(output: str) -> list[dict[str, Any]]:
    """`-o json` prints one array, or one object per line; accept both."""
    output = output.strip()
    if not output:
        return []
    try:
        parsed = json.loads(output)
    except json.JSONDecodeError:
        parsed = [json.loads(line) for line in output.splitlines() if line.strip()]
    return parsed if isinstance(parsed, list) else [parsed]


async def export_task_queue(stack: Stack, expected: set[str]) -> dict[str, list[str]]:
    """`temporal workflow list` the task queue, then `show` and `describe` every execution."""
    task_queue = stack.settings.temporal_task_queue
    deadline = time.monotonic() + 20
    while True:
        listed = json_documents(
            await temporal(
                stack, "workflow", "list", "--query", f"TaskQueue='{task_queue}'", "-o", "json"
            )
        )
        executions = {
            (item["execution"]["workflowId"], item["execution"]["runId"]) for item in listed
        }
        missing = expected - {workflow_id for workflow_id, _ in executions}
        if not missing:
            break
        assert time.monotonic() < deadline, f"not listed: {missing}"
        await asyncio.sleep(0.5)
    exports: dict[str, list[str]] = {}
    for workflow_id, run_id in sorted(executions):
        run = ("--workflow-id", workflow_id, "--run-id", run_id, "-o", "json")
        shown = await temporal(stack, "workflow", "show", *run)
        assert json.loads(shown)["events"], f"empty history for {workflow_id}"
        described = await temporal(stack, "workflow", "describe", *run)
        exports[f"{workflow_id}/{run_id}"] = [shown, described]
    return exports


def decoded_payloads(node: Any) -> Iterator[str]:
    """Every base64 field of an export, decoded: payload data and metadata alike."""
    if isinstance(node, dict):
        data, metadata = node.get("data"), node.get("metadata")
        if isinstance(data, str) and isinstance(metadata, dict):
            for raw in [data, *[v for v in metadata.values() if isinstance(v, str)]]:
                try:
                    yield base64.b64decode(raw, validate=True).decode("utf-8", "replace")
                except binascii.Error:
                    yield raw
        for value in node.values():
            yield from decoded_payloads(value)
    elif isinstance(node, list):
        for value in node:
            yield from decoded_payloads(value)


def check_exports(
    exports: dict[str, list[str]], secrets: list[Secret], clusters: list[str]
) -> None:
    decoded_all: list[str] = []
    for name, documents in exports.items():
        for document in documents:
            assert_clean(secrets, f"the export of {name}", document)
            decoded = "\n".join(decoded_payloads(json.loads(document)))
            assert_clean(secrets, f"the decoded payloads of {name}", decoded)
            decoded_all.append(decoded)
    everything = "\n".join(decoded_all)
    for cluster in clusters:  # the search really looked inside the payloads
        assert cluster in everything, f"{cluster} not found in the decoded payloads"


# --- what reached the simulator and the database -------------------------------------------------
def launched_tasks(simulator: SimulatorServer, cluster: str) -> list[dict[str, Any]]:
    """The task YAML of every launch request the simulator received for ``cluster``."""

    def read() -> list[str]:
        return [
            str(getattr(request.body, "task", ""))
            for request in simulator.state.requests.values()
            if request.name == "sky.launch" and request.cluster_name == cluster
        ]

    tasks: list[dict[str, Any]] = [yaml.safe_load(t) for t in simulator._call(read)]
    return tasks


def assert_credential_delivered(simulator: SimulatorServer, cluster: str) -> None:
    tasks = launched_tasks(simulator, cluster)
    assert tasks, f"the simulator saw no launch of {cluster}"
    for task in tasks:
        assert task.get("secrets") == {
            "HF_TOKEN": HF_TOKEN,
            "R2_ACCESS_KEY_ID": R2_ACCESS_KEY_ID,
            "R2_SECRET_ACCESS_KEY": R2_SECRET_ACCESS_KEY,
        }, task.get("secrets")
        envs = json.dumps(task.get("envs"))
        assert HF_TOKEN not in envs
        assert R2_SECRET_ACCESS_KEY not in envs


async def database_text(settings: Settings, tenant: str) -> str:
    engine = create_engine(settings.database_url or "")
    try:
        async with engine.connect() as connection:
            nodes = (
                await connection.execute(
                    text("SELECT * FROM nodes WHERE tenant = :t"), {"t": tenant}
                )
            ).all()
            events = (
                await connection.execute(
                    text(
                        "SELECT e.* FROM node_events e JOIN nodes n USING (node_id) "
                        "WHERE n.tenant = :t"
                    ),
                    {"t": tenant},
                )
            ).all()
            credentials = (
                await connection.execute(
                    text("SELECT * FROM tenant_credentials WHERE tenant = :t"), {"t": tenant}
                )
            ).all()
    finally:
        await engine.dispose()
    assert nodes, tenant
    assert events, tenant
    assert credentials, tenant
    return "\n".join(repr(tuple(row)) for row in [*nodes, *events, *credentials])


def all_output(
    logs: EverythingHandler, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> str:
    captured = capfd.readouterr()
    return "\n".join([*logs.lines, caplog.text, captured.out, captured.err])


# --- the tests -----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", [LaunchMode.API, LaunchMode.CLI])
async def test_secrets_stay_out_of_histories_logs_and_errors(
    secret_stack: SecretStack,
    mode: LaunchMode,
    all_logs: EverythingHandler,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    ss = secret_stack
    async with running_worker(ss.stack, ss.settings):
        if mode is LaunchMode.API:  # through the starter API
            good = await full_lifecycle(ss, mode)
            bad, errors = await failing_launch(ss, mode)
        else:  # through `python -m starter`, its output searched too
            good, errors = await cli_lifecycle(ss, mode)
            bad, failed = await cli_failing_launch(ss, mode)
            errors += failed

    assert_credential_delivered(ss.simulator, good.cluster_name)
    assert_credential_delivered(ss.simulator, bad.cluster_name)

    exports = await export_task_queue(ss.stack, {f"node-{good.node_id}", f"node-{bad.node_id}"})
    check_exports(exports, ss.secrets, [good.cluster_name, bad.cluster_name])

    assert_clean(ss.secrets, "the errors raised to the caller", "\n".join(errors))
    assert_clean(ss.secrets, "the database rows", await database_text(ss.settings, ss.tenant))

    output = all_output(all_logs, caplog, capfd)
    assert all_logs.records > 0
    assert f"launching {good.cluster_name} via {mode.value}" in output  # the worker's own logs
    assert_clean(ss.secrets, "the logs", output)


@dataclass
class RejectedLaunch:
    ss: SecretStack
    spec: NodeSpec
    workflow_id: str
    view: NodeView
    failure: WorkflowFailureError | None
    errors: list[str]


async def launch_with_a_rejected_token(stack: Stack) -> RejectedLaunch:
    """The API server refuses the worker's token: the launch fails and so does its cleanup."""
    tenant = f"sec{uuid.uuid4().hex[:10]}"
    env = secret_env(
        stack,
        SKYPILOT_SERVICE_ACCOUNT_TOKEN=WRONG_TOKEN,
        SKYPILOT_MAX_RETRIES="1",
        NODE_CLEANUP_BUDGET="3s",
    )
    settings = load_settings(env)
    await store_credential(settings, tenant)
    ss = SecretStack(stack, settings, tenant, stack_secrets(env))
    assert any(s.value == WRONG_TOKEN for s in ss.secrets)
    spec = ss.spec()
    failure: WorkflowFailureError | None = None
    async with running_worker(stack, settings):
        started = await ss.control.launch_node(spec, launch_mode=LaunchMode.API)
        handle = stack.client.get_workflow_handle_for(NodeWorkflow.run, started.workflow_id)
        try:
            result = await asyncio.wait_for(handle.result(), 90)
            errors = [result.model_dump_json()]
        except WorkflowFailureError as error:
            failure = error
            errors = error_chain(error)
        view = await ss.control.node_status(started.workflow_id)
    assert stack.simulator.counters()["launch_requests"].get(spec.cluster_name) is None
    errors.append(view.model_dump_json())
    return RejectedLaunch(ss, spec, started.workflow_id, view, failure, errors)


async def test_a_rejected_token_stays_out_of_errors(
    stack: Stack,
    all_logs: EverythingHandler,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The 401 path (launch refused, teardown refused) must not echo the token either."""
    rejected = await launch_with_a_rejected_token(stack)
    ss = rejected.ss
    assert rejected.view.status in (NodeStatus.FAILED, NodeStatus.CLEANUP_FAILED), rejected.view

    exports = await export_task_queue(stack, {rejected.workflow_id})
    check_exports(exports, ss.secrets, [rejected.spec.cluster_name])
    assert_clean(ss.secrets, "the errors raised to the caller", "\n".join(rejected.errors))
    assert_clean(ss.secrets, "the database rows", await database_text(ss.settings, ss.tenant))
    output = all_output(all_logs, caplog, capfd)
    assert all_logs.records > 0
    assert_clean(ss.secrets, "the logs", output)


async def test_a_launch_refused_before_anything_was_submitted_fails_without_a_leak_marker(
    stack: Stack,
) -> None:
    """The API server refuses the token at validate: nothing was sent, so nothing is downed and
    no cleanup_failed leak marker is raised (issue 10, path 8); the reason is kept."""
    rejected = await launch_with_a_rejected_token(stack)
    view = rejected.view
    assert view.status is NodeStatus.FAILED, view
    assert "teardown not confirmed" not in (view.error or ""), view
    assert rejected.failure is not None
    assert "operation=validate" in (view.error or ""), view
    # The workflow's own failure says nothing was cleaned up, not that a cleanup ran.
    message = str(rejected.failure.cause)
    assert "nothing to clean up" in message, message
    assert "was cleaned up" not in message, message


def test_the_leak_search_sees_every_encoding() -> None:
    """The detector itself: a secret inside a base64 payload is found at any byte alignment."""
    secret = Secret("HF_TOKEN", HF_TOKEN)
    key = key_secret("KEY", base64.b64encode(bytes(range(32))).decode())
    for prefix in ("", "x", "xy", "xyz", '{"a":"'):
        document = json.dumps({"spec": {"note": prefix + HF_TOKEN + "tail"}})
        data = base64.b64encode(document.encode()).decode()
        export = json.dumps(
            {"payloads": [{"metadata": {"encoding": "anNvbi9wbGFpbg=="}, "data": data}]}
        )
        assert HF_TOKEN not in export
        assert secret.found_in(export), prefix  # in the raw export, still base64
        decoded = "\n".join(decoded_payloads(json.loads(export)))
        assert secret.found_in(decoded), prefix
        with pytest.raises(pytest.fail.Exception):
            assert_clean([secret], "a planted leak", export)
    assert key.found_in(bytes(range(32)).hex())
    assert key.found_in("prefix" + base64.b64encode(b"ab" + bytes(range(32))).decode())
    assert not secret.found_in(json.dumps({"spec": {"tenant": "acme"}}))
