"""The README's Temporal CLI commands, run verbatim with bash against the dev server.

The commands are read from README.md between ``<!-- temporal-cli-start -->`` and
``<!-- temporal-cli-end -->`` (a fenced bash block). Only the environment
changes: TEMPORAL_ADDRESS and TEMPORAL_TASK_QUEUE, which the commands themselves reference,
point them at the test's dev server and the worker's task queue; `temporal` is found on PATH.
A last test has an operator `temporal workflow cancel` a node while it launches.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import CancelledError

from controlplane.config import load_settings
from controlplane.db.engine import create_engine
from controlplane.db.repository import NodeRepository
from controlplane.lifecycle import NodeStatus
from controlplane.spec import NodeSpec
from tests.integration.conftest import Stack
from tests.support.processes import run_text
from tests.support.specs import node_spec
from tests.support.temporal_env import dev_server_path
from worker import create_worker, open_activities
from workflows.models import NodeWorkflowInput
from workflows.node import NodeWorkflow

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
START, END = "<!-- temporal-cli-start -->", "<!-- temporal-cli-end -->"
FENCE = re.compile(r"```(?:bash|sh|shell)?[ \t]*\n(?P<body>.*?)^```", re.S | re.M)


@dataclass
class Block:
    source: Path
    text: str

    def commands(self) -> list[str]:
        """One entry per `temporal ...` command (continuation and quoted lines included)."""
        commands: list[list[str]] = []
        for line in self.text.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line.startswith("temporal ") or not commands:
                commands.append([])
            commands[-1].append(line)
        return ["\n".join(lines) for lines in commands]

    def command(self, *words: str) -> str:
        found = [c for c in self.commands() if all(w in c.split("\n", 1)[0] for w in words)]
        assert len(found) == 1, f"expected one `temporal {' '.join(words)}` in {self.source}"
        return found[0]


def block_between_markers(path: Path) -> str | None:
    """The fenced block between the markers; None when the markers are absent or empty."""
    if not path.is_file():
        return None
    text = path.read_text()
    if START not in text or END not in text:
        return None
    between = text.split(START, 1)[1].split(END, 1)[0]
    match = FENCE.search(between)
    return match.group("body") if match else None


def readme_block() -> Block:
    body = block_between_markers(README)
    if body is None:
        pytest.fail(f"no fenced bash block between {START} and {END} in README.md")
    return Block(README, body)


def bash_env(stack: Stack) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}
    env["PATH"] = f"{Path(dev_server_path()).parent}{os.pathsep}{env.get('PATH', '')}"
    env["TEMPORAL_ADDRESS"] = stack.env["TEMPORAL_ADDRESS"]
    env["TEMPORAL_TASK_QUEUE"] = stack.settings.temporal_task_queue
    return env


async def bash(command: str, env: dict[str, str]) -> str:
    done = await asyncio.to_thread(
        run_text, ["bash", "-euo", "pipefail", "-c", command], env=env, timeout=120
    )
    assert done.returncode == 0, f"{command}\nexit {done.returncode}\n{done.stdout}{done.stderr}"
    return done.stdout


def node_status(output: str) -> str | None:
    """The node's status in the CLI's answer: JSON (query) or Go's map[...] (update result)."""
    found = re.findall(r'(?<![a-z_])"?status"?\s*:\s*"?([a-z_]+)', output)
    return found[-1] if found else None


def started_spec(start: str) -> tuple[str, NodeSpec]:
    """The workflow id and the spec that the README's start command sends."""
    workflow_id = re.search(r"--workflow-id[ =]+(\S+)", start)
    document = re.search(r"--input\s+'(.*?)'", start, re.S)
    assert workflow_id, start
    assert document, start
    return workflow_id.group(1), NodeWorkflowInput.model_validate_json(document.group(1)).spec


def test_the_block_uses_the_environment_for_address_and_task_queue() -> None:
    block = readme_block()
    for command in block.commands():
        assert command.startswith("temporal "), command
        assert '--address "${TEMPORAL_ADDRESS:-localhost:7233}"' in command, command
    start = block.command("workflow", "start")
    assert '--task-queue "${TEMPORAL_TASK_QUEUE:-gpu-nodes}"' in start
    assert "--type NodeWorkflow" in start
    workflow_id, spec = started_spec(start)
    # The README's rule: the id is node-<node id>, so a second start attaches.
    assert workflow_id == f"node-{spec.node_id}"


async def test_the_readme_commands_launch_and_terminate_a_node(worker: Stack) -> None:
    block = readme_block()
    env = bash_env(worker)
    start = block.command("workflow", "start")
    query = block.command("workflow", "query")
    terminate = block.command("workflow", "update", "execute")
    workflow_id, spec = started_spec(start)
    before = worker.simulator.counters()["launch_requests"].get(spec.cluster_name, 0)

    await bash(start, env)
    handle = worker.client.get_workflow_handle_for(NodeWorkflow.run, workflow_id)
    first_run = (await handle.describe()).run_id
    deadline = time.monotonic() + 60
    status = None
    while status != NodeStatus.RUNNING.value:
        assert time.monotonic() < deadline, f"the node never reached running (last: {status})"
        await asyncio.sleep(0.5)
        status = node_status(await bash(query, env))
        assert status not in {s.value for s in NodeStatus if s.final}, status

    await bash(start, env)  # a second start attaches to the live workflow
    assert (await handle.describe()).run_id == first_run
    assert worker.simulator.counters()["launch_requests"][spec.cluster_name] == before + 1

    answer = await bash(terminate, env)
    assert node_status(answer) == NodeStatus.TERMINATED.value, answer
    assert re.search(r'still_terminating"?\s*:\s*false', answer), answer
    assert (await handle.result()).status is NodeStatus.TERMINATED
    assert spec.cluster_name not in worker.simulator.counters()["live_clusters"]
    engine = create_engine(worker.settings.database_url or "")
    try:
        row = await NodeRepository(engine).get(spec.node_id)
    finally:
        await engine.dispose()
    assert row is not None
    assert row.status == NodeStatus.TERMINATED.value
    assert row.workflow_id == workflow_id


async def test_temporal_cli_cancel_during_launch_tears_the_node_down(stack: Stack) -> None:
    """`temporal workflow cancel` on a launching node: the node must not stay up.

    The worker runs with the default NODE_HEARTBEAT_TIMEOUT (30s): heartbeats, and so cancels,
    reach an activity at most every ~24s, so a launch that is ready sooner completes before its
    activity sees the cancel. The simulator answers slowly to keep the cancel inside the launch.
    """
    settings = load_settings({**stack.env, "NODE_HEARTBEAT_TIMEOUT": "30s"})
    env = bash_env(stack)
    spec = node_spec(deployment=f"cancel-{uuid.uuid4().hex[:8]}")
    control = stack.control
    async with (
        open_activities(settings) as activities,
        create_worker(stack.client, settings, activities),
    ):
        stack.simulator.set_faults(slow_response_s=0.3)
        try:
            started = await control.launch_node(spec)
            deadline = time.monotonic() + 30
            while (await control.node_status(started.workflow_id)).status is not (
                NodeStatus.LAUNCHING
            ):
                assert time.monotonic() < deadline, "the node never started launching"
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.2)  # the readiness wait is running now
            address = '--address "${TEMPORAL_ADDRESS:-localhost:7233}"'
            await bash(
                f"temporal workflow cancel {address} --workflow-id {started.workflow_id}", env
            )
            handle = stack.client.get_workflow_handle_for(NodeWorkflow.run, started.workflow_id)
            outcome: BaseException | None = None
            try:
                await asyncio.wait_for(handle.result(), 30)
            except (WorkflowFailureError, TimeoutError) as error:
                outcome = error  # judged below
            view = await control.node_status(started.workflow_id)
            description = await handle.describe()
        finally:
            stack.simulator.set_faults(slow_response_s=0.0)
            with contextlib.suppress(Exception):  # never leave a node up behind a failure
                await control.terminate_node(f"node-{spec.node_id}")
    assert view.status in (NodeStatus.FAILED, NodeStatus.TERMINATED), (
        f"cancelled during launch, the node is {view.status.value} and its workflow "
        f"{description.status.name if description.status else '?'}"
    )
    assert description.status is WorkflowExecutionStatus.CANCELED
    assert isinstance(outcome, WorkflowFailureError)
    assert isinstance(outcome.cause, CancelledError), outcome.cause
    assert spec.cluster_name not in stack.simulator.counters()["live_clusters"]
