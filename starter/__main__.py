"""Command line over the starter API: JSON on stdout, errors on stderr, meaningful exit codes.

    python -m starter launch --tenant acme --model NousResearch/Meta-Llama-3-8B-Instruct \\
        --provider aws --region us-east-1 --gpu A100:1
    python -m starter status --workflow-id node-<node id>
    python -m starter terminate --workflow-id node-<node id>

    python -m starter reconcile --no-cleanup      # report orphans, lost, stuck, cleanup_failed
    python -m starter health                      # Temporal, Postgres, SkyPilot API, `sky`
    python -m starter events --since 0 --follow   # node events in commit order (JSON lines)
    python -m starter usage --tenant acme --by model   # GPU-seconds and node-hours

An operator's tool: it acts across tenants (a service acting for one tenant uses
ControlPlane.for_tenant). Exit codes: 0 done, 1 failed, 2 bad input or configuration (nothing
was started), 3 no such workflow, 4 still terminating when the bounded wait ran out, 5 Temporal
unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import uuid
from datetime import timedelta
from typing import Any, NoReturn

from pydantic import ValidationError
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError

from controlplane.config import ConfigError, load_settings
from controlplane.lifecycle import LaunchMode, NodeStatus
from controlplane.spec import NodeSpec
from controlplane.urls import redact_url, scrub
from starter import events_cli, update_cli
from starter.api import ControlPlane, IdentityConflict, NotFound, deployment_policy
from starter.connection import connect
from starter.health import check as check_health
from starter.schedules import RECONCILE_SCHEDULE_ID, ensure_reconcile_schedule
from starter.watch import ProgressDisplay, Row, follow, settled
from workflows.models import (
    DeploymentSpec,
    ReconcileInput,
    ScaleDeploymentRequest,
    TerminateClusterInput,
)
from workflows.reconcile import ReconcileWorkflow

EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_NOT_FOUND, EXIT_STILL_TERMINATING, EXIT_UNREACHABLE = (
    0,
    1,
    2,
    3,
    4,
    5,
)
GPU_PATTERN = re.compile(r"^(?P<type>[A-Za-z0-9][A-Za-z0-9-]*)(?::(?P<count>\d+))?$")


class InputError(Exception):
    """Bad command-line input: the message names the option and says what was expected."""


def parse_gpu(text: str) -> tuple[str, int]:
    match = GPU_PATTERN.match(text.strip())
    if match is None:
        raise InputError(f"--gpu {text!r}: expected TYPE or TYPE:COUNT, e.g. A100:1 or H100:8")
    count = int(match.group("count") or 1)
    if count < 1:
        raise InputError(f"--gpu {text!r}: the GPU count must be at least 1")
    return match.group("type"), count


def validation_message(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False, include_input=False):
        field = ".".join(str(p) for p in item["loc"]) or "input"
        parts.append(f"{field}: {item['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


class JsonErrorParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is an InputError (JSON on stderr, exit 2) like any other."""

    def error(self, message: str) -> NoReturn:
        raise InputError(f"{self.prog}: {message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = JsonErrorParser(prog="python -m starter", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def node_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--tenant", required=True)
        p.add_argument("--model", required=True, help="e.g. NousResearch/Meta-Llama-3-8B-Instruct")
        p.add_argument("--provider", required=True, help="aws, gcp, azure, kubernetes, ...")
        p.add_argument("--region", required=True)
        p.add_argument("--gpu", required=True, help="TYPE:COUNT, e.g. A100:1")
        p.add_argument("--spot", action="store_true")
        p.add_argument(
            "--mode",
            choices=[m.value for m in LaunchMode],
            help="override SKYPILOT_USE_API_SERVER for this node",
        )

    launch = sub.add_parser("launch", help="launch one node")
    node_options(launch)
    launch.add_argument("--deployment", default="default")
    launch.add_argument("--replica", type=int, default=0)
    launch.add_argument(
        "--wait", type=float, metavar="SECONDS", help="wait until the node is running (or failed)"
    )

    deploy = sub.add_parser("deploy", help="launch a deployment of N replicas")
    node_options(deploy)
    deploy.add_argument("--name", default="default")
    deploy.add_argument("--replicas", type=int, required=True)
    deploy.add_argument(
        "--wait", type=float, metavar="SECONDS", help="wait until every replica is running"
    )

    status = sub.add_parser("status", help="a node's or a deployment's status")
    status.add_argument("--workflow-id", required=True)

    terminate = sub.add_parser("terminate", help="terminate a node (bounded wait)")
    target = terminate.add_mutually_exclusive_group(required=True)
    target.add_argument("--workflow-id")
    target.add_argument(
        "--cluster", help="any cluster by name, e.g. one this system did not launch"
    )
    terminate.add_argument(
        "--wait",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="with --cluster: how long to wait (default 300)",
    )

    scale = sub.add_parser("scale", help="scale a deployment")
    scale.add_argument("--workflow-id", required=True)
    scale.add_argument("--replicas", type=int, required=True)

    listing = sub.add_parser("list", help="list node workflows")
    listing.add_argument("--running", action="store_true")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--tenant", help="only this tenant's nodes (by their start input)")
    listing.add_argument("--deployment", help="only this deployment's nodes (Deployment)")
    listing.add_argument(
        "--status",
        choices=[s.value for s in NodeStatus],
        help="only nodes in this status (NodeStatus)",
    )

    reconcile = sub.add_parser("reconcile", help="run the reconciler once, or schedule it")
    reconcile.add_argument(
        "--schedule",
        action="store_true",
        help="create or update the Temporal Schedule (RECONCILE_INTERVAL)",
    )
    reconcile.add_argument(
        "--cleanup",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="clean up what it finds (default: RECONCILE_CLEANUP)",
    )

    sub.add_parser("health", help="check Temporal, Postgres, the SkyPilot API server and `sky`")
    events_cli.add_commands(sub)
    update_cli.add_command(sub)
    return parser


def _spec_fields(args: argparse.Namespace) -> dict[str, Any]:
    """What a node and a deployment are both asked for on the command line."""
    gpu_type, gpu_count = parse_gpu(args.gpu)
    return {
        "tenant": args.tenant,
        "model": args.model,
        "provider": args.provider,
        "region": args.region,
        "gpu_type": gpu_type,
        "gpu_count": gpu_count,
        "spot": args.spot,
    }


def node_spec(args: argparse.Namespace) -> NodeSpec:
    return NodeSpec(**_spec_fields(args), deployment=args.deployment, replica=args.replica)


def deployment_spec(args: argparse.Namespace) -> DeploymentSpec:
    return DeploymentSpec(**_spec_fields(args), name=args.name)


def emit(payload: Any) -> None:
    print(json.dumps(payload, indent=2, default=str), flush=True)


def emit_final(payload: Any, display: ProgressDisplay) -> None:
    """After a live display: pretty JSON on a terminal, one JSON line after JSON lines."""
    if display.tty:
        emit(payload)
    else:
        print(json.dumps(payload, default=str), flush=True)


async def wait_for_node(cp: ControlPlane, started: dict[str, Any], seconds: float) -> int:
    display = ProgressDisplay(sys.stdout)
    workflow_id = str(started["workflow_id"])

    async def snapshot() -> tuple[list[Row], bool]:
        view = await cp.node_status(workflow_id)
        return [Row(workflow_id, str(started["cluster_name"]), view)], settled(view)

    rows = await follow(snapshot, display, timeout=timedelta(seconds=seconds))
    view = rows[0].view
    assert view is not None
    emit_final({**started, "node": view.model_dump(mode="json")}, display)
    return EXIT_OK if view.status is NodeStatus.RUNNING else EXIT_FAILED


async def wait_for_deployment(cp: ControlPlane, workflow_id: str, seconds: float) -> int:
    display = ProgressDisplay(sys.stdout)

    async def snapshot() -> tuple[list[Row], bool]:
        deployment = await cp.deployment_status(workflow_id)
        rows = []
        for replica in deployment.replicas:
            try:
                view = await cp.node_status(replica.workflow_id)
            except NotFound:  # not started yet, or ended: the deployment's record says how
                view = None
            label = replica.cluster_name or (view.cluster_name if view else None)
            rows.append(Row(replica.workflow_id, label or f"replica {replica.replica}", view))
        live = [r for r in deployment.replicas if not r.status.final]
        done = len(live) >= deployment.desired_replicas and all(
            row.view is not None and settled(row.view)
            for row, replica in zip(rows, deployment.replicas, strict=True)
            if not replica.status.final
        )
        return rows, done or deployment.terminating

    await follow(snapshot, display, timeout=timedelta(seconds=seconds))
    final = await cp.deployment_status(workflow_id)
    emit_final(final.model_dump(mode="json"), display)
    running = sum(r.status is NodeStatus.RUNNING for r in final.replicas)
    return EXIT_OK if running >= final.desired_replicas else EXIT_FAILED


async def run(args: argparse.Namespace) -> int:
    # Validate everything the person typed before connecting to anything.
    mode = LaunchMode(args.mode) if getattr(args, "mode", None) else None
    spec = node_spec(args) if args.command == "launch" else None
    deployment = deployment_spec(args) if args.command == "deploy" else None
    update = update_cli.request(args, parse_gpu) if args.command == "update" else None
    if args.command in ("deploy", "scale"):
        ScaleDeploymentRequest(replicas=args.replicas)  # the same bounds the workflow enforces
    if args.command == "terminate" and args.cluster:
        TerminateClusterInput(cluster_name=args.cluster)
    settings = load_settings()
    if args.command == "health":
        health = await check_health(settings)
        emit(health)
        return EXIT_OK if health["ok"] else EXIT_FAILED
    if args.command in events_cli.COMMANDS:
        return await events_cli.run(args, settings)
    try:
        client = await connect(settings)
    except RuntimeError as exc:
        raise ConnectionError(
            f"cannot reach Temporal at TEMPORAL_ADDRESS={redact_url(settings.temporal_address)}: "
            f"{scrub(str(exc), settings.temporal_address)}"
        ) from None
    cp = ControlPlane(
        client, settings.temporal_task_queue, cluster_prefix=settings.cluster_name_prefix
    )
    if spec is not None:
        started = await cp.launch_node(spec, launch_mode=mode)
        result: dict[str, Any] = started.as_dict()
        if args.wait:
            return await wait_for_node(cp, result, args.wait)
        emit(result)
        return EXIT_OK
    if deployment is not None:
        workflow_id = await cp.launch_deployment(
            deployment, args.replicas, launch_mode=mode, policy=deployment_policy(settings)
        )
        if args.wait:
            return await wait_for_deployment(cp, workflow_id, args.wait)
        emit({"workflow_id": workflow_id, "replicas": args.replicas})
        return EXIT_OK
    if args.command == "status":
        if args.workflow_id.startswith("deployment-"):
            emit((await cp.deployment_status(args.workflow_id)).model_dump(mode="json"))
        else:
            emit((await cp.node_status(args.workflow_id)).model_dump(mode="json"))
        return EXIT_OK
    if args.command == "terminate":
        if args.cluster:
            outcome = await cp.terminate_cluster(args.cluster, wait=timedelta(seconds=args.wait))
            if outcome is None:
                emit({"cluster_name": args.cluster, "still_terminating": True})
                return EXIT_STILL_TERMINATING
            emit(outcome.model_dump(mode="json"))
            return EXIT_OK
        if args.workflow_id.startswith("deployment-"):
            emit((await cp.terminate_deployment(args.workflow_id)).model_dump(mode="json"))
            return EXIT_OK
        response = await cp.terminate_node(args.workflow_id)
        emit(response.model_dump(mode="json"))
        return EXIT_STILL_TERMINATING if response.still_terminating else EXIT_OK
    if update is not None:
        return await update_cli.run(cp, args, update)
    if args.command == "scale":
        emit((await cp.scale_deployment(args.workflow_id, args.replicas)).model_dump(mode="json"))
        return EXIT_OK
    if args.command == "reconcile":
        if args.schedule:
            created = await ensure_reconcile_schedule(
                client, settings.temporal_task_queue, settings.reconcile_interval
            )
            emit(
                {
                    "schedule_id": RECONCILE_SCHEDULE_ID,
                    "outcome": created,
                    "every_seconds": settings.reconcile_interval.total_seconds(),
                }
            )
            return EXIT_OK
        report = await client.execute_workflow(
            ReconcileWorkflow.run,
            ReconcileInput(cleanup=args.cleanup),
            id=f"reconcile-manual-{uuid.uuid4().hex[:8]}",
            task_queue=settings.temporal_task_queue,
        )
        emit(report.model_dump(mode="json"))
        return EXIT_OK
    emit(
        await cp.list_nodes(
            running_only=args.running,
            limit=args.limit,
            tenant=args.tenant,
            deployment=args.deployment,
            status=NodeStatus(args.status) if args.status else None,
        )
    )
    return EXIT_OK


def fail(code: int, message: str, hint: str | None = None) -> int:
    payload = {"error": message}
    if hint:
        payload["hint"] = hint
    print(json.dumps(payload), file=sys.stderr, flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return asyncio.run(run(args))
    except InputError as exc:
        return fail(EXIT_INPUT, str(exc))
    except ValidationError as exc:
        return fail(EXIT_INPUT, validation_message(exc), "nothing was started")
    except ConfigError as exc:
        return fail(EXIT_INPUT, str(exc))
    except NotFound as exc:
        return fail(EXIT_NOT_FOUND, str(exc), "check the workflow id (python -m starter list)")
    except ConnectionError as exc:
        return fail(EXIT_UNREACHABLE, str(exc), "start the local stack with scripts/demo")
    except TimeoutError:
        return fail(EXIT_FAILED, "timed out waiting", "the workflow keeps going; query its status")
    except IdentityConflict as exc:
        return fail(EXIT_FAILED, str(exc), "nothing was started or attached")
    except WorkflowUpdateFailedError as exc:
        return fail(EXIT_FAILED, f"update failed: {exc.cause}")
    except RPCError as exc:
        return fail(EXIT_FAILED, f"Temporal refused the call: {exc.message}")
    except KeyboardInterrupt:  # `events --follow` ends with Ctrl-C
        return EXIT_OK


def exit_now(code: int) -> NoReturn:
    """Flush, then skip interpreter finalisation (sdk-python #300 corrupts exit codes)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
