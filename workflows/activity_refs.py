"""Activities as the workflows see them: a name and the model types in and out.

Workflows call activities by name, so no I/O code (httpx, SQLAlchemy, cryptography) is imported
into the workflow sandbox; the worker registers the implementations (activities/*) under these
same names, and a test checks that every reference has an implementation with matching types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from temporalio import workflow

from workflows.models import (
    ClusterHealthInput,
    ClusterHealthResult,
    CredentialRefInput,
    CredentialRefResult,
    DownClusterInput,
    DownClusterResult,
    LaunchInput,
    LaunchResult,
    LookupClusterInput,
    LookupClusterResult,
    ReconcileScanInput,
    ReconcileScanResult,
    RecordIntentInput,
    RecordIntentResult,
    RecoverNodeInput,
    RecoverNodeResult,
    TransitionInput,
    TransitionResult,
    WaitReadyInput,
    WaitReadyResult,
)

In = TypeVar("In", bound=BaseModel)
Out = TypeVar("Out", bound=BaseModel)


@dataclass(frozen=True)
class ActivityRef(Generic[In, Out]):
    name: str
    input_type: type[In]
    result_type: type[Out]

    async def run(self, arg: In, **options: Any) -> Out:
        """Execute the activity from workflow code, typed end to end."""
        result: Out = await workflow.execute_activity(
            self.name, arg, result_type=self.result_type, **options
        )
        return result


RECORD_INTENT = ActivityRef("record_intent", RecordIntentInput, RecordIntentResult)
RECORD_TRANSITION = ActivityRef("record_transition", TransitionInput, TransitionResult)
CREDENTIAL_REFERENCE = ActivityRef("credential_reference", CredentialRefInput, CredentialRefResult)
LAUNCH_CLUSTER = ActivityRef("launch_cluster", LaunchInput, LaunchResult)
WAIT_READY = ActivityRef("wait_ready", WaitReadyInput, WaitReadyResult)
CLUSTER_HEALTH = ActivityRef("cluster_health", ClusterHealthInput, ClusterHealthResult)
DOWN_CLUSTER = ActivityRef("down_cluster", DownClusterInput, DownClusterResult)
LOOKUP_CLUSTER = ActivityRef("lookup_cluster", LookupClusterInput, LookupClusterResult)
RECONCILE_SCAN = ActivityRef("reconcile_scan", ReconcileScanInput, ReconcileScanResult)
RECOVER_NODE = ActivityRef("recover_node", RecoverNodeInput, RecoverNodeResult)

ALL = (
    RECORD_INTENT,
    RECORD_TRANSITION,
    CREDENTIAL_REFERENCE,
    LAUNCH_CLUSTER,
    WAIT_READY,
    CLUSTER_HEALTH,
    DOWN_CLUSTER,
    LOOKUP_CLUSTER,
    RECONCILE_SCAN,
    RECOVER_NODE,
)
