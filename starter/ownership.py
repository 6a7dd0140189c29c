"""Whose a workflow is: the input its current run was started with, read from its history.

The start input names the node (or deployment) a workflow runs, and with it the tenant. The
starter reads it, without a worker or a database, to prove two things before it acts: that an
attach (a second start of the same workflow id) found the very node or deployment asked for,
and that a tenant-scoped call targets that tenant's workflow.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

M = TypeVar("M", bound=BaseModel)


async def start_input(client: Client, workflow_id: str, workflow_type: str) -> Any | None:
    """The latest run's start input as plain JSON; None if there is no such workflow (or type)."""
    handle = client.get_workflow_handle(workflow_id)
    try:
        first = None
        async for event in handle.fetch_history_events(page_size=1):
            first = event
            break
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    if first is None or not first.HasField("workflow_execution_started_event_attributes"):
        return None
    attributes = first.workflow_execution_started_event_attributes
    if attributes.workflow_type.name != workflow_type or not attributes.input.payloads:
        return None
    decoded = await client.data_converter.decode(attributes.input.payloads)
    return decoded[0] if decoded else None


def parsed(raw: Any, model: type[M]) -> M | None:
    """``raw`` as a ``model``; None when it is not one (it then names no node anyone owns)."""
    try:
        return model.model_validate(raw)
    except ValidationError:
        return None


async def started_input(
    client: Client, workflow_id: str, workflow_type: str, model: type[M]
) -> M | None:
    """The latest run's start input as a ``model``; None if there is none, or it is not one."""
    return parsed(await start_input(client, workflow_id, workflow_type), model)
