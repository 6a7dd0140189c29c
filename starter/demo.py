"""The main job: the local stack up, then one node's whole lifecycle, each state printed.

    scripts/demo                # API mode (the REST client against the simulator)
    scripts/demo --mode cli     # CLI mode (the `sky` runner against the simulator)

With a terminal attached it keeps the stack up afterwards, so the Temporal web UI can be looked
at, until Ctrl-C; without one (or with --exit) it stops the stack and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

import httpx

from controlplane.config import ConfigError, decode_key, load_settings
from controlplane.db.engine import create_engine
from controlplane.db.repository import CredentialRepository, NodeRepository
from controlplane.lifecycle import LaunchMode, NodeStatus
from controlplane.skypilot.probe import model_is_ready
from controlplane.spec import NodeSpec
from controlplane.vault import CredentialPayload, CredentialStore, Vault
from devtools.devstack import DevStack, dev_stack, simulator_counters
from starter.api import ControlPlane
from starter.connection import connect
from workflows.node import NodeWorkflow


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


async def store_demo_credential(stack: DevStack, spec: NodeSpec) -> None:
    """A tenant credential (an HF token), so the launch exercises the vault end to end."""
    engine = create_engine(stack.database_url)
    try:
        store = CredentialStore(
            Vault(decode_key(stack.encryption_key())), CredentialRepository(engine)
        )
        await store.put(
            spec.tenant,
            spec.provider,
            CredentialPayload(workspace=None, secrets={"HF_TOKEN": "hf_demo_secret"}),
        )
    finally:
        await engine.dispose()


async def print_events(stack: DevStack, node_id: str) -> None:
    engine = create_engine(stack.database_url)
    try:
        for event in await NodeRepository(engine).events(node_id):
            say(
                f"  outbox: {event.event_type:<20} {event.from_status or '-':>11} -> "
                f"{event.to_status}"
            )
    finally:
        await engine.dispose()


async def lifecycle(stack: DevStack, mode: LaunchMode) -> None:
    settings = load_settings({"TEMPORAL_ADDRESS": stack.temporal_address})
    client = await connect(settings)
    control = ControlPlane(
        client, settings.temporal_task_queue, cluster_prefix=settings.cluster_name_prefix
    )
    spec = NodeSpec(
        tenant="acme",
        model="NousResearch/Meta-Llama-3-8B-Instruct",
        provider="aws",
        region="us-east-1",
        gpu_type="A100",
        gpu_count=1,
        deployment=f"demo-{int(time.time())}",
    )
    await store_demo_credential(stack, spec)
    started = await control.launch_node(spec, launch_mode=mode)
    say(f"node {started.node_id} -> cluster {started.cluster_name} ({mode.value} mode)")
    say(
        f"workflow {started.workflow_id}: "
        f"{stack.ui_url}/namespaces/default/workflows/{started.workflow_id}"
    )
    seen: NodeStatus | None = None
    while True:
        view = await control.node_status(started.workflow_id)
        if view.status is not seen:
            seen = view.status
            say(
                f"status: {view.status.value}"
                + (f" (endpoint {view.endpoint})" if view.endpoint else "")
            )
        if view.status is NodeStatus.RUNNING or view.status.final:
            break
        await asyncio.sleep(0.2)
    if view.status is not NodeStatus.RUNNING or view.endpoint is None:
        raise RuntimeError(f"node ended as {view.status.value}: {view.error}")
    async with httpx.AsyncClient() as http:
        say(f"model answers {view.endpoint}/health: {await model_is_ready(http, view.endpoint)}")
    say("terminating (bounded wait)...")
    response = await control.terminate_node(started.workflow_id, reason="demo finished")
    say(
        f"terminate answered: {response.status.value}"
        + (" (still terminating)" if response.still_terminating else "")
    )
    final = await client.get_workflow_handle_for(NodeWorkflow.run, started.workflow_id).result()
    say(f"workflow finished: node {final.status.value}")
    await print_events(stack, started.node_id)
    counters = simulator_counters(stack.simulator_url)
    launches = counters.get("launch_requests", {})
    assert isinstance(launches, dict)
    say(
        f"simulator: launch requests for the cluster = {launches.get(started.cluster_name, 0)}, "
        f"live clusters = {counters.get('live_clusters')}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo", description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=[m.value for m in LaunchMode], default="api")
    parser.add_argument("--exit", action="store_true", help="stop the stack when done")
    args = parser.parse_args(argv)
    keep = sys.stdin.isatty() and not args.exit
    try:
        with dev_stack() as stack:
            say(f"Temporal dev server {stack.temporal_address}, web UI {stack.ui_url}")
            say(
                f"Postgres {'(embedded)' if not os.environ.get('DATABASE_URL') else ''} ready, "
                "migrations applied"
            )
            say(f"SkyPilot simulator {stack.simulator_url}; worker running (logs in {stack.home})")
            asyncio.run(lifecycle(stack, LaunchMode(args.mode)))
            if keep:
                say(f"stack stays up: web UI {stack.ui_url}. Ctrl-C to stop.")
                while True:
                    time.sleep(3600)
    except KeyboardInterrupt:
        say("stopping")
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    say("stack stopped")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
