"""Replay the committed histories of each workflow's main paths against today's workflow code.

A change to a workflow that would break running executions (a command added, removed or
reordered) fails here with a NondeterminismError. The histories come from
``python -m tests.replay.record_histories``; re-record them only for a deliberate, versioned
change. The last tests prove the check can fail: each history is replayed against a copy of its
workflow with one extra timer, which must be reported as nondeterministic.
"""

from __future__ import annotations

import functools
import json
from datetime import timedelta
from importlib.machinery import SourceFileLoader
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import (
    Interceptor,
    Replayer,
    SignalChildWorkflowInput,
    SignalExternalWorkflowInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
    WorkflowReplayResult,
)
from temporalio.workflow import NondeterminismError

from worker import workflow_runner
from workflows.deployment import DeploymentWorkflow
from workflows.fleet_health import FleetHealthWorkflow
from workflows.node import NodeWorkflow
from workflows.reconcile import ReconcileWorkflow
from workflows.terminate import TerminateClusterWorkflow

HISTORIES = Path(__file__).resolve().parent / "histories"
WORKFLOWS: list[type] = [
    NodeWorkflow,
    DeploymentWorkflow,
    TerminateClusterWorkflow,
    FleetHealthWorkflow,
    ReconcileWorkflow,
]
MAIN_PATHS = {
    "node_happy_path": "NodeWorkflow",
    "node_launch_failure": "NodeWorkflow",
    "node_relaunch_after_transient_failure": "NodeWorkflow",
    "node_cancelled_during_launch": "NodeWorkflow",
    "node_cancelled_while_running": "NodeWorkflow",
    "node_lost": "NodeWorkflow",  # before the fleet sweep: the node's own health timer
    "node_lost_found_by_sweep": "NodeWorkflow",  # before NODE_LOST_SECOND_LOOK: a 30 s look
    "node_model_unhealthy_then_healthy": "NodeWorkflow",
    "node_queued_for_a_launch_slot": "NodeWorkflow",  # before the admission task queue
    "node_queued_on_the_admission_queue": "NodeWorkflow",
    # one marker for every node patch (workflows/patches.py), the slot asked for locally first
    "node_happy_path_bundled": "NodeWorkflow",
    "node_queued_after_a_local_first_ask": "NodeWorkflow",
    "node_lost_after_a_short_second_look": "NodeWorkflow",
    "fleet_health_sweep": "FleetHealthWorkflow",
    "fleet_health_lease": "FleetHealthWorkflow",  # lease mode, as the schedules run it
    "deployment_scale_and_terminate": "DeploymentWorkflow",
    "deployment_controller_heals_and_rolls_out": "DeploymentWorkflow",
    "node_repaired_in_place": "NodeWorkflow",
    "terminate_unmanaged_cluster": "TerminateClusterWorkflow",
    "deployment_node_id_children": "DeploymentWorkflow",
    "node_child_reports_cluster_name": "NodeWorkflow",
    "terminate_cluster_refused_for_tenant": "TerminateClusterWorkflow",
    "node_with_search_attributes_and_progress": "NodeWorkflow",
    "deployment_with_search_attributes": "DeploymentWorkflow",
    "terminate_cluster_delegated_to_its_node": "TerminateClusterWorkflow",
    "reconcile_asks_a_running_node_to_check": "ReconcileWorkflow",
}
FILES = sorted(HISTORIES.glob("*.json"))


def load(path: Path) -> tuple[str, WorkflowHistory]:
    """The history and its workflow type, as fetch_history().to_json() wrote it."""
    document: dict[str, Any] = json.loads(path.read_text())
    started = document["events"][0]["workflowExecutionStartedEventAttributes"]
    workflow_id = str(started.get("workflowId") or path.stem)
    return str(started["workflowType"]["name"]), WorkflowHistory.from_json(workflow_id, document)


def is_sandbox_validation_flake(error: BaseException) -> bool:
    """sdk-python #585: on Python 3.11 validating a workflow in the sandbox can fail with a
    KeyError on a thread id ("Failed validating workflow ...")."""
    if "Failed validating workflow" not in str(error):
        return False
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, KeyError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


async def replay(
    history: WorkflowHistory, workflows: list[type], interceptors: list[Interceptor] | None = None
) -> WorkflowReplayResult:
    """Replay once; retry once only for the known sandbox validation flake (sdk-python #585)."""
    replayer = Replayer(
        workflows=workflows,
        data_converter=pydantic_data_converter,
        interceptors=interceptors or [],
        workflow_runner=workflow_runner(),  # the worker's sandbox
    )
    try:
        return await replayer.replay_workflow(history)
    except RuntimeError as error:
        if not is_sandbox_validation_flake(error):
            raise
    return await replayer.replay_workflow(history)


class SignalsSent(Interceptor):
    """Collects the name of every signal the replayed workflow sends (child or external)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        names = self.names

        class Outbound(WorkflowOutboundInterceptor):
            async def signal_child_workflow(self, input: SignalChildWorkflowInput) -> None:
                names.append(input.signal)
                await self.next.signal_child_workflow(input)

            async def signal_external_workflow(self, input: SignalExternalWorkflowInput) -> None:
                names.append(input.signal)
                await self.next.signal_external_workflow(input)

        class Inbound(WorkflowInboundInterceptor):
            def init(self, outbound: WorkflowOutboundInterceptor) -> None:
                super().init(Outbound(outbound))

        return Inbound


def signals_in(path: Path) -> list[str]:
    """The signal names of the history's signal commands, in order."""
    events = json.loads(path.read_text())["events"]
    return [
        e["signalExternalWorkflowExecutionInitiatedEventAttributes"]["signalName"]
        for e in events
        if e["eventType"] == "EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED"
    ]


def test_every_main_path_has_a_committed_history() -> None:
    found = {path.stem: load(path)[0] for path in FILES}
    missing = sorted(set(MAIN_PATHS) - set(found))
    assert not missing, f"record them: python -m tests.replay.record_histories {' '.join(missing)}"
    for name, workflow_type in MAIN_PATHS.items():
        assert found[name] == workflow_type, name


@pytest.mark.parametrize("path", FILES, ids=[path.stem for path in FILES])
async def test_history_replays_against_todays_workflows(path: Path) -> None:
    _, history = load(path)
    result = await replay(history, WORKFLOWS)
    assert result.replay_failure is None


# Replay checks a signal command's type, not its name: a signal sent under a new name would
# replay and then never reach running workflows. So the names are compared here, one by one.
@pytest.mark.parametrize("path", FILES, ids=[path.stem for path in FILES])
async def test_signals_keep_their_names_on_the_wire(path: Path) -> None:
    _, history = load(path)
    sent = SignalsSent()
    result = await replay(history, WORKFLOWS, [sent])
    assert result.replay_failure is None
    assert sent.names == signals_in(path)


@pytest.mark.parametrize(
    "stem",
    [
        "node_happy_path",
        "deployment_scale_and_terminate",
        "terminate_unmanaged_cluster",
        "fleet_health_sweep",
        "reconcile_asks_a_running_node_to_check",
    ],
)
async def test_a_run_executes_only_its_workflow_module_again(
    stem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sandbox reloads the workflow's own module per run and takes everything else it
    imports from the worker (worker.SANDBOX_PASSTHROUGH): re-executing the shared modules for
    every run cost the worker CPU per lifecycle (issue 11)."""
    executed: list[str] = []
    original = SourceFileLoader.exec_module

    def recording(self: SourceFileLoader, module: ModuleType) -> None:
        if module.__name__.split(".")[0] in {"workflows", "controlplane", "activities"}:
            executed.append(module.__name__)  # ours (the SDK and stdlib load lazily, once)
        original(self, module)

    monkeypatch.setattr(SourceFileLoader, "exec_module", recording)
    _, history = load(HISTORIES / f"{stem}.json")
    result = await replay(history, WORKFLOWS)
    assert result.replay_failure is None
    workflow_modules = {w.__module__ for w in WORKFLOWS}
    assert executed, "the sandbox loaded nothing: the check would pass vacuously"
    assert set(executed) <= {"workflows", *workflow_modules}, executed


def test_the_histories_cover_every_signal_a_workflow_sends() -> None:
    covered = {name for path in FILES for name in signals_in(path)}
    assert covered >= {"request_terminate", "check_health", "model_health", "replica_status"}


# --- proof that the check bites: each workflow with one extra timer before its first activity ---
def with_extra_timer(base: type) -> type:
    """A copy of ``base`` under the same workflow name whose run first sleeps one second.

    The run method keeps ``base.run``'s exact signature (functools.wraps), so the variant follows
    the real workflow's input type whatever it becomes. Not sandboxed: the sandbox would
    re-import this test module, which reads files at import.
    """
    definition = workflow._Definition.must_from_class(base)

    @functools.wraps(base.run)  # type: ignore[attr-defined]
    async def run(self: Any, *args: Any) -> Any:
        await workflow.sleep(timedelta(seconds=1))
        return await base.run(self, *args)  # type: ignore[attr-defined]

    name = f"{base.__name__}WithExtraTimer"
    run.__qualname__ = f"{name}.run"  # defined on the variant, as the SDK requires
    run.__module__ = __name__
    variant = type(name, (base,), {"run": workflow.run(run), "__module__": __name__})
    return workflow.defn(
        name=definition.name,
        failure_exception_types=list(definition.failure_exception_types),
        sandboxed=False,
    )(variant)


CHANGED: list[type] = [with_extra_timer(cls) for cls in WORKFLOWS]


@pytest.mark.parametrize("path", FILES, ids=[path.stem for path in FILES])
async def test_a_changed_workflow_is_reported_as_nondeterministic(path: Path) -> None:
    _, history = load(path)
    # The extra timer's command meets the history's first activity (or child) instead, or its
    # first patch marker (a history recorded after a workflow.patched change).
    with pytest.raises(NondeterminismError, match=r"TMPRL1100.*(Timer|patch marker)"):
        await replay(history, CHANGED)
