"""Bad input through the starter API, `python -m starter` and the Temporal CLI.

Every way in must answer a bad spec with a clear error that names the field, and must neither
launch anything (the simulator's launch counters do not move) nor record anything (no ``nodes``
row). The Temporal CLI path goes through a running worker: the workflow must FAIL at once with
the field named, not retry its first workflow task forever.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from temporalio.client import WorkflowFailureError

from controlplane.db.engine import create_engine
from controlplane.db.models import NodeRow
from controlplane.db.repository import NodeRepository
from controlplane.spec import NodeSpec
from tests.integration.conftest import Stack
from tests.support.processes import run_text
from tests.support.temporal_env import dev_server_path
from workflows.models import DeploymentSpec

REPO = Path(__file__).resolve().parents[2]

# A workflow that fails while being built leaves the SDK's run coroutine un-awaited; Python warns
# when it is collected. Collect here, where the warning is expected and filtered, rather than in
# whichever later test the garbage collector happens to run.
NEVER_AWAITED = (
    "ignore:coroutine '_WorkflowInstanceImpl._apply_initialize_workflow.<locals>.run_workflow' "
    "was never awaited:RuntimeWarning"
)
pytestmark = pytest.mark.filterwarnings(NEVER_AWAITED)

MISSING = object()
GOOD: dict[str, Any] = {
    "tenant": "badinput",
    "model": "NousResearch/Meta-Llama-3-8B-Instruct",
    "provider": "aws",
    "region": "us-east-1",
    "gpu_type": "A100",
    "gpu_count": 1,
}


def spec_fields(**changes: Any) -> dict[str, Any]:
    """The good spec with ``changes``; a value of MISSING drops the field."""
    fields = {**GOOD, "deployment": f"bad-{uuid.uuid4().hex[:8]}"}
    fields.update(changes)
    return {k: v for k, v in fields.items() if v is not MISSING}


# (case id, changes to the good spec, the field the error must name)
SPEC_CASES = [
    ("unknown-provider", {"provider": "moon"}, "provider"),
    ("gpu-count-zero", {"gpu_count": 0}, "gpu_count"),
    ("gpu-count-negative", {"gpu_count": -2}, "gpu_count"),
    ("gpu-count-not-a-number", {"gpu_count": "x"}, "gpu_count"),
    ("bad-tenant", {"tenant": "bad tenant!"}, "tenant"),
    ("empty-tenant", {"tenant": ""}, "tenant"),
    ("bad-model", {"model": "../../etc/passwd"}, "model"),
    ("missing-model", {"model": MISSING}, "model"),
    ("missing-gpu-count", {"gpu_count": MISSING}, "gpu_count"),
    ("unknown-field", {"gpus": 2}, "gpus"),
]
SPEC_PARAMS = [pytest.param(changes, name, id=case) for case, changes, name in SPEC_CASES]


# --- what "nothing happened" means ---------------------------------------------------------------
@dataclass
class Untouched:
    """The simulator's launches, the ``nodes`` table and the task queue, before a bad input."""

    stack: Stack
    launch_requests: dict[str, int] = field(default_factory=dict)
    launch_posts: int = 0
    node_ids: set[str] = field(default_factory=set)

    async def snapshot(self) -> Untouched:
        counters = self.stack.simulator.counters()
        self.launch_requests = dict(counters["launch_requests"])
        self.launch_posts = counters["calls"].get("POST /launch", 0)
        self.node_ids = {row.node_id for row in await self.rows()}
        return self

    async def rows(self) -> list[NodeRow]:
        engine = create_engine(self.stack.settings.database_url or "")
        try:
            return await NodeRepository(engine).list(limit=100_000)
        finally:
            await engine.dispose()

    async def workflow_ids(self) -> list[str]:
        query = f"TaskQueue = '{self.stack.settings.temporal_task_queue}'"
        return [execution.id async for execution in self.stack.client.list_workflows(query)]

    async def check(self, *, allowed_workflows: Collection[str] = (), settle: float = 1.0) -> None:
        """Nothing launched, nothing recorded, no workflow but ``allowed_workflows``."""
        deadline = time.monotonic() + settle
        while True:  # visibility lags a little: watch for a while, not once
            started = set(await self.workflow_ids())
            assert started <= set(allowed_workflows), f"workflows were started: {started}"
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.2)
        counters = self.stack.simulator.counters()
        assert counters["launch_requests"] == self.launch_requests, "a launch reached SkyPilot"
        assert counters["calls"].get("POST /launch", 0) == self.launch_posts
        rows = await self.rows()
        new = [row for row in rows if row.node_id not in self.node_ids]
        assert new == [], f"nodes rows were recorded: {new}"
        mine = [row for row in rows if row.workflow_id in allowed_workflows]
        assert mine == [], f"rows recorded by the bad workflows: {mine}"


@pytest.fixture
async def untouched(worker: Stack) -> Untouched:
    return await Untouched(worker).snapshot()


# --- the starter API -----------------------------------------------------------------------------
@pytest.mark.parametrize(("changes", "name"), SPEC_PARAMS)
async def test_starter_api_refuses_a_bad_spec_before_starting_anything(
    untouched: Untouched, changes: dict[str, Any], name: str
) -> None:
    fields = spec_fields(**changes)
    with pytest.raises(ValidationError) as raised:
        NodeSpec(**fields)
    assert name in {str(loc) for error in raised.value.errors() for loc in error["loc"]}
    assert name in str(raised.value)
    await untouched.check()


async def test_starter_api_refuses_a_bad_deployment_before_starting_anything(
    untouched: Untouched,
) -> None:
    with pytest.raises(ValidationError, match="gpu_count"):
        DeploymentSpec(**{**GOOD, "gpu_count": 0, "name": "blue"})
    good = DeploymentSpec(**{**GOOD, "name": f"d{uuid.uuid4().hex[:8]}"})
    with pytest.raises(ValidationError, match="replicas"):
        await untouched.stack.control.launch_deployment(good, replicas=-1)
    await untouched.check()


async def test_workflow_refuses_a_spec_that_bypassed_validation(untouched: Untouched) -> None:
    """Defence in depth: a NodeSpec built with model_construct still never launches."""
    forged = NodeSpec.model_construct(**spec_fields(provider="moon", gpu_count=0))
    started = await untouched.stack.control.launch_node(forged)
    handle = untouched.stack.client.get_workflow_handle(started.workflow_id)
    with pytest.raises(WorkflowFailureError) as failure:
        await asyncio.wait_for(handle.result(), 30)
    message = str(failure.value.cause)
    assert "spec.provider" in message
    assert "spec.gpu_count" in message
    await untouched.check(allowed_workflows={started.workflow_id})


# --- python -m starter ---------------------------------------------------------------------------
def cli_args(fields: dict[str, Any]) -> list[str]:
    argv = ["launch"]
    for option in ("tenant", "model", "provider", "region"):
        if option in fields:
            argv += [f"--{option}", str(fields[option])]
    argv += ["--gpu", f"{fields['gpu_type']}:{fields['gpu_count']}"]
    argv += ["--deployment", fields["deployment"]]
    return argv


CLI_CASES = [
    pytest.param(cli_args(spec_fields(provider="moon")), "provider", id="unknown-provider"),
    pytest.param(cli_args(spec_fields(gpu_count=0)), "--gpu", id="gpu-count-zero"),
    pytest.param(cli_args(spec_fields(gpu_count=-1)), "--gpu", id="gpu-count-negative"),
    pytest.param(cli_args(spec_fields(gpu_count="x")), "--gpu", id="gpu-malformed"),
    pytest.param(cli_args(spec_fields(gpu_count=17)), "gpu_count", id="gpu-count-too-large"),
    pytest.param(cli_args(spec_fields(tenant="bad tenant!")), "tenant", id="bad-tenant"),
    pytest.param(cli_args(spec_fields(model="../../etc/passwd")), "model", id="bad-model"),
    pytest.param(cli_args(spec_fields(model=MISSING)), "--model", id="missing-model"),
]


def cli_env(stack: Stack) -> dict[str, str]:
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SKYPILOT_", "TEMPORAL_", "R2_", "NODE_")) and k != "DATABASE_URL"
    }
    return {**inherited, **stack.env}


@pytest.mark.parametrize(("argv", "name"), CLI_CASES)
async def test_starter_cli_exits_2_naming_the_field(
    untouched: Untouched, argv: list[str], name: str
) -> None:
    done = await asyncio.to_thread(
        run_text, [sys.executable, "-m", "starter", *argv], env=cli_env(untouched.stack)
    )
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert done.stdout == ""
    assert name in done.stderr
    await untouched.check()
    payload = json.loads(done.stderr.strip())  # one JSON document, nothing else
    assert name in payload["error"], payload


# --- the Temporal CLI ----------------------------------------------------------------------------
TEMPORAL = dev_server_path()  # the `temporal` binary serves as both dev server and CLI


async def temporal(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    address = stack.env["TEMPORAL_ADDRESS"]
    return await asyncio.to_thread(
        run_text, [TEMPORAL, *args, "--address", address, "--namespace", "default"]
    )


async def cli_start(stack: Stack, workflow_id: str, *input_args: str) -> None:
    done = await temporal(
        stack,
        "workflow",
        "start",
        "--type",
        "NodeWorkflow",
        "--task-queue",
        stack.settings.temporal_task_queue,
        "--workflow-id",
        workflow_id,
        *input_args,
    )
    assert done.returncode == 0, done.stderr


async def closed_status(stack: Stack, workflow_id: str, timeout: float = 6.0) -> str:
    """The execution's status once it is no longer running (or RUNNING after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        done = await temporal(
            stack, "workflow", "describe", "--workflow-id", workflow_id, "-o", "json"
        )
        assert done.returncode == 0, done.stderr
        status = str(json.loads(done.stdout)["workflowExecutionInfo"]["status"])
        if status != "WORKFLOW_EXECUTION_STATUS_RUNNING" or time.monotonic() >= deadline:
            return status
        await asyncio.sleep(0.3)


async def history(stack: Stack, workflow_id: str) -> list[dict[str, Any]]:
    done = await temporal(stack, "workflow", "show", "--workflow-id", workflow_id, "-o", "json")
    assert done.returncode == 0, done.stderr
    events: list[dict[str, Any]] = json.loads(done.stdout)["events"]
    return events


async def terminate_if_running(stack: Stack, workflow_id: str) -> None:
    await temporal(
        stack, "workflow", "terminate", "--workflow-id", workflow_id, "--reason", "test cleanup"
    )


def collect_abandoned_workflow_coroutines() -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "coroutine .*run_workflow.* was never awaited")
        gc.collect()


async def assert_fails_at_once_naming(stack: Stack, workflow_id: str, names: list[str]) -> None:
    try:
        status = await closed_status(stack, workflow_id)
        events = await history(stack, workflow_id)
        kinds = [event["eventType"] for event in events]
        retried = [
            e["workflowTaskFailedEventAttributes"]["failure"]["message"]
            for e in events
            if e["eventType"] == "EVENT_TYPE_WORKFLOW_TASK_FAILED"
        ]
        assert status == "WORKFLOW_EXECUTION_STATUS_FAILED", (
            f"the workflow is {status}, its first task failing over and over: {retried}"
        )
        assert "EVENT_TYPE_WORKFLOW_TASK_FAILED" not in kinds
        assert "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED" not in kinds  # nothing recorded or launched
        failed = events[-1]
        assert failed["eventType"] == "EVENT_TYPE_WORKFLOW_EXECUTION_FAILED"
        message = failed["workflowExecutionFailedEventAttributes"]["failure"]["message"]
        for name in names:
            assert name in message, message
    finally:
        await terminate_if_running(stack, workflow_id)
        collect_abandoned_workflow_coroutines()


@pytest.mark.parametrize(("changes", "name"), SPEC_PARAMS)
async def test_temporal_cli_bad_spec_fails_the_workflow_naming_the_field(
    untouched: Untouched, changes: dict[str, Any], name: str
) -> None:
    workflow_id = f"bad-input-{uuid.uuid4().hex[:8]}"
    document = json.dumps({"spec": spec_fields(**changes)})
    await cli_start(untouched.stack, workflow_id, "--input", document)
    await assert_fails_at_once_naming(untouched.stack, workflow_id, [f"spec.{name}"])
    await untouched.check(allowed_workflows={workflow_id})


async def test_temporal_cli_several_bad_fields_are_all_named(untouched: Untouched) -> None:
    workflow_id = f"bad-input-{uuid.uuid4().hex[:8]}"
    document = json.dumps(
        {"spec": spec_fields(provider="moon", gpu_count=0, tenant="x y"), "launch_mode": "ssh"}
    )
    await cli_start(untouched.stack, workflow_id, "--input", document)
    await assert_fails_at_once_naming(
        untouched.stack,
        workflow_id,
        ["spec.provider", "spec.gpu_count", "spec.tenant", "launch_mode"],
    )
    await untouched.check(allowed_workflows={workflow_id})


async def test_temporal_cli_refuses_non_json_input(untouched: Untouched) -> None:
    workflow_id = f"bad-input-{uuid.uuid4().hex[:8]}"
    done = await temporal(
        untouched.stack,
        "workflow",
        "start",
        "--type",
        "NodeWorkflow",
        "--task-queue",
        untouched.stack.settings.temporal_task_queue,
        "--workflow-id",
        workflow_id,
        "--input",
        "{spec: tenant=acme}",
    )
    assert done.returncode != 0
    assert "not valid JSON" in done.stderr
    described = await temporal(
        untouched.stack, "workflow", "describe", "--workflow-id", workflow_id
    )
    assert described.returncode != 0
    assert "not found" in described.stderr
    await untouched.check()


@pytest.mark.parametrize(
    "document", ["null", "[]", '"acme"', "{}"], ids=["null", "list", "string", "empty-object"]
)
async def test_temporal_cli_json_that_is_not_an_input_object_fails(
    untouched: Untouched, document: str
) -> None:
    workflow_id = f"bad-input-{uuid.uuid4().hex[:8]}"
    await cli_start(untouched.stack, workflow_id, "--input", document)
    names = ["spec"] if document == "{}" else ["NodeWorkflowInput"]
    await assert_fails_at_once_naming(untouched.stack, workflow_id, names)
    await untouched.check(allowed_workflows={workflow_id})


@pytest.mark.parametrize(
    ("input_args", "says"),
    [
        ((), "no input"),
        (("--input-meta", "encoding=binary/plain", "--input", "tenant=acme gpu=A100:1"), "bytes"),
    ],
    ids=["no-input", "binary-plain-input"],
)
async def test_temporal_cli_missing_or_raw_input_fails_the_workflow(
    untouched: Untouched, input_args: tuple[str, ...], says: str
) -> None:
    """No input, or a raw payload pydantic never sees: failed at once too, not retried."""
    workflow_id = f"bad-input-{uuid.uuid4().hex[:8]}"
    await cli_start(untouched.stack, workflow_id, *input_args)
    await assert_fails_at_once_naming(
        untouched.stack, workflow_id, ["NodeWorkflowInput", "spec", says]
    )
    await untouched.check(allowed_workflows={workflow_id})
