"""What each simulated request does once a "worker" runs it: launch, down, stop, status, ...

Each operation returns the request's (already encoded) return value or raises an exception
named like SkyPilot's, with SkyPilot's message. Timings come from SimConfig; failures from the
current Faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from devtools.skypilot_sim import launch_log
from devtools.skypilot_sim.contract import EMPTY_PICKLED_VALUE, NO_CLOUD_ACCESS_MESSAGE
from devtools.skypilot_sim.exceptions import SkyPilotError, sky_error
from devtools.skypilot_sim.payloads import (
    AutostopBody,
    EndpointsBody,
    ExecBody,
    LaunchBody,
    RequestCancelBody,
    StartBody,
    StatusBody,
    StatusRefreshMode,
    StopOrDownBody,
)
from devtools.skypilot_sim.records import Cluster, ClusterStatus, Request, cluster_record
from devtools.skypilot_sim.state import SimState
from devtools.skypilot_sim.taskspec import TaskSpec, check_cluster_name, parse_task

T = TypeVar("T")


def _body(request: Request, kind: type[T]) -> T:
    if not isinstance(request.body, kind):
        raise TypeError(f"{request.name} carries a {type(request.body).__name__}")
    return request.body


def launch_failure(type_name: str, spec: TaskSpec, cluster: str, request_id: str) -> SkyPilotError:
    """The injected launch error, with the message SkyPilot gives for that type."""
    messages = {
        "ResourcesUnavailableError": (
            f"Failed to acquire resources in all zones in {spec.region} for {spec.request_str}."
        ),
        "NoCloudAccessError": NO_CLOUD_ACCESS_MESSAGE,
        "RequestInterruptedError": (
            f"Request {request_id!r} was interrupted by an API server restart and will not be "
            "resumed. Please re-submit the original request."
        ),
        "ResourcesMismatchError": (
            f"Requested resources do not match the existing cluster {cluster!r}."
        ),
        "ClusterOwnerIdentityMismatchError": (
            f"Cluster {cluster!r} is owned by a different cloud identity."
        ),
        "ProvisionPrechecksError": f"Provision prechecks failed for cluster {cluster!r}.",
    }
    message = messages.get(type_name, f"Simulated {type_name} while launching {cluster!r}.")
    return sky_error(type_name, message)


def _launch_result(cluster: Cluster, body: LaunchBody, spec: TaskSpec) -> dict[str, Any]:
    cluster.jobs += 1
    cluster.autostop, cluster.to_down = spec.autostop_minutes, spec.autostop_down
    if body.idle_minutes_to_autostop is not None:
        cluster.autostop, cluster.to_down = body.idle_minutes_to_autostop, body.down
    elif body.down:
        cluster.to_down = True
    return {"job_id": cluster.jobs, "handle": EMPTY_PICKLED_VALUE}


def _undo_launch(state: SimState, cluster: Cluster, previous: ClusterStatus | None) -> None:
    """A cancelled or failed launch leaves no cluster behind that it brought into being."""
    if not state.is_current(cluster) or cluster.status != ClusterStatus.INIT:
        return
    if previous is None:
        state.remove_cluster(cluster)
    else:
        state.set_status(cluster, previous)


async def launch(state: SimState, request: Request) -> dict[str, Any]:
    """INIT for launch_delay_s, then UP; an UP cluster is reused; injected faults fail it."""
    body = _body(request, LaunchBody)
    spec = parse_task(body.task)
    check_cluster_name(body.cluster_name)
    if body.dryrun:
        return {"job_id": None, "handle": EMPTY_PICKLED_VALUE}
    failure = state.take_launch_failure()
    if failure is None and not spec.land(state.faults.unavailable_locations):
        failure = "ResourcesUnavailableError"
    if failure == "NoCloudAccessError":  # the optimizer fails first: nothing is logged
        await asyncio.sleep(state.config.launch_delay_s / 2)
        raise launch_failure(failure, spec, body.cluster_name, request.request_id)
    request.write(*launch_log.optimizer_lines(spec))
    async with state.cluster_lock(body.cluster_name):
        cluster = state.clusters.get(body.cluster_name)
        if cluster is not None and cluster.status == ClusterStatus.UP and failure is None:
            result = _launch_result(cluster, body, spec)
            request.write(*launch_log.reused_lines(body.cluster_name, result["job_id"]))
            return result
        previous = None if cluster is None else cluster.status
        if cluster is None:
            cluster = state.new_cluster(body.cluster_name, spec, request)
        elif cluster.status != ClusterStatus.UP:
            cluster.spec = spec
            cluster.launch_request_id = request.request_id
            state.set_status(cluster, ClusterStatus.INIT)
        request.on_cancel = lambda: _undo_launch(state, cluster, previous)
        request.write(*launch_log.provisioning_lines(spec, body.cluster_name))
        if failure is not None:
            await asyncio.sleep(state.config.launch_delay_s / 2)
            _undo_launch(state, cluster, previous)
            raise launch_failure(failure, spec, body.cluster_name, request.request_id)
        # Half the delay provisioning, half setting up (the cluster is UP at the end).
        await asyncio.sleep(state.config.launch_delay_s / 2)
        request.write(*launch_log.provisioned_lines(body.cluster_name))
        await asyncio.sleep(state.config.launch_delay_s / 2)
        if not state.is_current(cluster):
            raise launch_failure(
                "ResourcesUnavailableError", spec, body.cluster_name, request.request_id
            )
        request.on_cancel = None
        state.mark_up(cluster)
        result = _launch_result(cluster, body, spec)
        request.write(*launch_log.submitted_lines(body.cluster_name, result["job_id"]))
        return result


async def exec_task(state: SimState, request: Request) -> dict[str, Any]:
    """Run a task on an UP cluster as a new job. The node's task restarts its model server, so
    a crashed or hung model comes back (after the warm-up) on the same cluster and GPU."""
    body = _body(request, ExecBody)
    parse_task(body.task)
    check_cluster_name(body.cluster_name)
    await asyncio.sleep(state.config.status_delay_s)
    cluster = state.clusters.get(body.cluster_name)
    if cluster is None:
        raise _does_not_exist(body.cluster_name)
    if cluster.status != ClusterStatus.UP:
        raise sky_error(
            "ClusterNotUpError",
            f"Cluster {body.cluster_name!r} is not up; it is {cluster.status.value}.",
        )
    if body.dryrun:
        return {"job_id": None, "handle": EMPTY_PICKLED_VALUE}
    cluster.jobs += 1
    cluster.exec_jobs += 1
    state.set_model_fault(body.cluster_name, None)
    cluster.up_since = time.monotonic()  # the restarted server warms up again
    return {"job_id": cluster.jobs, "handle": EMPTY_PICKLED_VALUE}


def _does_not_exist(name: str) -> SkyPilotError:
    return sky_error("ClusterDoesNotExist", f"Cluster {name!r} does not exist.")


@contextlib.asynccontextmanager
async def _cluster_to_stop_or_down(
    state: SimState, request: Request
) -> AsyncIterator[tuple[StopOrDownBody, Cluster | None]]:
    """A stop or down's start: the cluster must exist; its other requests are cancelled, then
    its lock is held while the caller acts on it (None: the cancelled launch took it along)."""
    body = _body(request, StopOrDownBody)
    await asyncio.sleep(state.config.status_delay_s)
    if body.cluster_name not in state.clusters:
        raise _does_not_exist(body.cluster_name)
    state.cancel_cluster_requests(body.cluster_name, keep_name=request.name)
    async with state.cluster_lock(body.cluster_name):
        yield body, state.clusters.get(body.cluster_name)


async def down(state: SimState, request: Request) -> None:
    """Terminate: the cluster's other requests are killed first, then it is gone."""
    async with _cluster_to_stop_or_down(state, request) as (body, cluster):
        if cluster is None:
            return None  # the launch it cancelled took its INIT cluster with it
        request.write(f"Terminating cluster {body.cluster_name}...")
        await asyncio.sleep(state.config.down_delay_s)
        state.remove_cluster(cluster)
        request.write(f"Terminating cluster {body.cluster_name}...done.")
    return None


async def stop(state: SimState, request: Request) -> None:
    async with _cluster_to_stop_or_down(state, request) as (body, cluster):
        if cluster is None:
            raise _does_not_exist(body.cluster_name)
        await asyncio.sleep(state.config.stop_delay_s)
        if state.is_current(cluster):
            state.set_status(cluster, ClusterStatus.STOPPED)
    return None


async def start(state: SimState, request: Request) -> None:
    """Restart a STOPPED cluster (INIT for launch_delay_s, then UP); an UP one stays as it is."""
    body = _body(request, StartBody)
    await asyncio.sleep(state.config.status_delay_s)
    if body.cluster_name not in state.clusters:
        raise _does_not_exist(body.cluster_name)
    async with state.cluster_lock(body.cluster_name):
        cluster = state.clusters.get(body.cluster_name)
        if cluster is None:
            raise _does_not_exist(body.cluster_name)
        if cluster.status == ClusterStatus.UP:
            return None
        state.set_status(cluster, ClusterStatus.INIT)
        await asyncio.sleep(state.config.launch_delay_s)
        if state.is_current(cluster):
            state.mark_up(cluster)
    return None


async def autostop(state: SimState, request: Request) -> None:
    """Set the cluster's autostop; the real message for a missing cluster is yellow."""
    body = _body(request, AutostopBody)
    await asyncio.sleep(state.config.status_delay_s)
    cluster = state.clusters.get(body.cluster_name)
    if cluster is None:
        raise sky_error(
            "ClusterDoesNotExist", f"\x1b[33mCluster {body.cluster_name!r} does not exist.\x1b[0m"
        )
    cluster.autostop, cluster.to_down = body.idle_minutes, body.down
    return None


async def status(state: SimState, request: Request) -> list[dict[str, Any]]:
    """Cluster records, newest launch first; terminated clusters are simply absent."""
    body = _body(request, StatusBody)
    refresh = body.refresh != StatusRefreshMode.NONE
    await asyncio.sleep(state.config.status_delay_s * (3 if refresh else 1))
    clusters = sorted(state.clusters.values(), key=lambda c: c.launched_at, reverse=True)
    if body.cluster_names:
        clusters = [c for c in clusters if c.name in body.cluster_names]
    return [cluster_record(c, include_credentials=body.include_credentials) for c in clusters]


async def endpoints(state: SimState, request: Request) -> dict[str, str]:
    """Port → address of the simulated model server (backend_utils.get_endpoints)."""
    body = _body(request, EndpointsBody)
    await asyncio.sleep(state.config.status_delay_s)
    port: int | None = None
    if body.port is not None:
        try:
            port = int(body.port)
        except ValueError:
            raise ValueError(f"Invalid endpoint {body.port!r}.") from None
    cluster = state.clusters.get(body.cluster)
    if cluster is None:
        raise sky_error("ClusterNotUpError", f"Cluster {body.cluster!r} not found.")
    if cluster.status != ClusterStatus.UP:
        raise sky_error("ClusterNotUpError", f"Cluster {cluster.name!r} is not in UP status.")
    address = f"{request.server_netloc}/sim/models/{cluster.name}"
    ports = cluster.spec.ports
    if port is not None:
        return {str(port): address} if port in ports else {}
    return {str(p): address for p in ports}


async def api_cancel(state: SimState, request: Request) -> list[str]:
    body = _body(request, RequestCancelBody)
    return state.cancel_requests(body.request_ids, body.user_id)
