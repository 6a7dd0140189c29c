"""A `sky`-compatible command line backed by the simulator, so CLI mode runs end to end locally.

It answers the subcommands the CLI runner uses — ``launch``, ``exec``, ``down``, ``stop``,
``status -o json``, ``status --endpoint``, ``api status -o json``, ``api logs`` and
``api cancel`` — with the real 0.14.1 CLI's exit codes and the output lines the runner reads.
Like the real CLI it finds its server at SKYPILOT_API_SERVER_ENDPOINT, else in the client config
(``api_server.endpoint`` in SKYPILOT_GLOBAL_CONFIG), and its token the same way. Secrets arrive
in a ``--secret-file`` (dotenv, possibly ``/dev/fd/N``) and go into the task's ``secrets:``,
never onto a command line. Each ``launch`` sends a new launch request, as the real one does.

    SKYPILOT_API_SERVER_ENDPOINT=http://127.0.0.1:46590 \\
        python -m devtools.skypilot_sim.sky_cli launch -y -d -c c1 --secret-file s.env task.yaml
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from dotenv import dotenv_values
from pydantic import SecretStr

from controlplane.skypilot.client import SkyPilotClient
from controlplane.skypilot.errors import SkyPilotError
from controlplane.skypilot.retry import RetryPolicy
from controlplane.skypilot.task import SkyTask

DEFAULT_ENDPOINT = "http://127.0.0.1:46580"


def _client_config() -> dict[str, Any]:
    path = os.environ.get("SKYPILOT_GLOBAL_CONFIG")
    if not path:
        return {}
    document = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    section = document.get("api_server") if isinstance(document, dict) else None
    return section if isinstance(section, dict) else {}


def _client() -> SkyPilotClient:
    config = _client_config()
    endpoint = os.environ.get("SKYPILOT_API_SERVER_ENDPOINT") or config.get(
        "endpoint", DEFAULT_ENDPOINT
    )
    token = os.environ.get("SKYPILOT_SERVICE_ACCOUNT_TOKEN") or config.get("service_account_token")
    return SkyPilotClient(
        endpoint,
        token=SecretStr(token) if token else None,
        retry=RetryPolicy(max_retries=3, backoff_s=0.5),
    )


def _fail(error: SkyPilotError) -> int:
    # The real CLI ends a failure with "<module>.<ExceptionClass>: <message>" on stderr.
    kind = error.error_type or type(error).__name__
    print(f"sky.exceptions.{kind}: {error.message}", file=sys.stderr, flush=True)
    return 1


async def _task(args: argparse.Namespace) -> SkyTask:
    document = yaml.safe_load(await asyncio.to_thread(Path(args.entrypoint).read_text))
    secrets = {}
    if args.secret_file:
        values = dotenv_values(args.secret_file)
        secrets = {k: SecretStr(v or "") for k, v in values.items()}
    for item in getattr(args, "env", None) or []:  # like the real CLI: task envs, KEY=VALUE
        key, _, value = item.partition("=")
        document.setdefault("envs", {})[key] = value
    return SkyTask(name=args.cluster, document=document, secrets=secrets)


async def exec_task(args: argparse.Namespace) -> int:
    """`sky exec -d CLUSTER TASK.yaml`: a new job on the existing cluster."""
    task = await _task(args)
    async with _client() as sky:
        request_id = await sky.exec(args.cluster, task, workspace=args.workspace)
        await sky.wait_for_request(request_id, timeout=3600)
    print(f"Submitted a job to cluster: {args.cluster}", flush=True)
    return 0


async def launch(args: argparse.Namespace) -> int:
    task = await _task(args)
    async with _client() as sky:
        request_id = await sky.launch(
            args.cluster, task, workspace=args.workspace, retry_until_up=args.retry_until_up
        )
        # Like the real CLI, print the launch's log as it happens (SDK: stream_and_get).
        async for line in sky.stream_log(request_id):
            print(line, flush=True)
        await sky.wait_for_request(request_id, timeout=3600)
    print(f"Running on cluster: {args.cluster}", flush=True)
    return 0


async def api(args: argparse.Namespace) -> int:
    """`sky api status|logs|cancel`, printing what the real 0.14.1 CLI prints."""
    async with _client() as sky:
        if args.api_command == "status":
            records = await sky.find_requests(args.cluster) if args.cluster else []
            listed = [
                {
                    "request_id": r.request_id,
                    "name": r.name,
                    "user_id": r.user_id,
                    "status": r.status_raw,
                    "created_at": r.created_at,
                    "cluster_name": r.cluster_name,
                }
                for r in records
                if args.all_status or not r.status.finished
            ]
            print(json.dumps(listed, indent=2), flush=True)
        elif args.api_command == "logs":
            await sky.wait_for_request(args.request_id, timeout=3600)
        else:
            cancelled = await sky.cancel(args.request_ids)
            if not cancelled:
                print("No requests need to be cancelled.", flush=True)
            elif len(cancelled) == 1:
                print(f"Cancelled 1 request: {cancelled[0]}", flush=True)
            else:
                print(f"Cancelled {len(cancelled)} requests.", flush=True)
    return 0


async def down_or_stop(args: argparse.Namespace) -> int:
    async with _client() as sky:
        for name in args.clusters:
            submit = sky.down if args.command == "down" else sky.stop
            request_id = await submit(name)
            try:
                await sky.wait_for_request(request_id, timeout=600)
            except SkyPilotError as error:
                if not error.not_found:
                    print(f"Reason: {error.error_type}: {error.message}.", flush=True)
                    print("Cluster(s) failed. See details above.", flush=True)
                    return 0  # the real CLI reports a failed down on stdout and exits 0
                print(f"Cluster(s) not found: {name}.", flush=True)
    return 0


async def status(args: argparse.Namespace) -> int:
    async with _client() as sky:
        if args.endpoint is not None:
            endpoints = await sky.endpoints(args.clusters[0], args.endpoint)
            if args.endpoint not in endpoints:
                print(
                    f"Endpoint {args.endpoint} not found for cluster {args.clusters[0]!r}.",
                    file=sys.stderr,
                )
                return 1
            print(endpoints[args.endpoint], flush=True)
            return 0
        records = await sky.status(args.clusters or None)
    print(json.dumps([r.model_dump(mode="json", by_alias=True) for r in records], indent=2))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sky")
    sub = p.add_subparsers(dest="command", required=True)
    launch_p = sub.add_parser("launch")
    launch_p.add_argument("-y", "--yes", action="store_true")
    launch_p.add_argument("-d", "--detach-run", action="store_true")
    launch_p.add_argument("-c", "--cluster", required=True)
    launch_p.add_argument("-w", "--workspace")
    launch_p.add_argument("-r", "--retry-until-up", action="store_true")
    launch_p.add_argument("--secret-file")
    launch_p.add_argument("--env", action="append", default=[])
    launch_p.add_argument("entrypoint")
    exec_p = sub.add_parser("exec")
    exec_p.add_argument("-d", "--detach-run", action="store_true")
    exec_p.add_argument("-w", "--workspace")
    exec_p.add_argument("--secret-file")
    exec_p.add_argument("cluster")
    exec_p.add_argument("entrypoint")
    for name in ("down", "stop"):
        p_ = sub.add_parser(name)
        p_.add_argument("-y", "--yes", action="store_true")
        p_.add_argument("--purge", action="store_true")
        p_.add_argument("clusters", nargs="+")
    status_p = sub.add_parser("status")
    status_p.add_argument("-o", "--output", default="table")
    status_p.add_argument("--endpoint", type=int)
    status_p.add_argument("--all-users", action="store_true")
    status_p.add_argument("clusters", nargs="*")
    api_p = sub.add_parser("api").add_subparsers(dest="api_command", required=True)
    api_status = api_p.add_parser("status")
    api_status.add_argument("-a", "--all-status", action="store_true")
    api_status.add_argument("-v", "--verbose", action="store_true")
    api_status.add_argument("-l", "--limit")
    api_status.add_argument("-o", "--output", default="table")
    api_status.add_argument("-c", "--cluster")
    api_logs = api_p.add_parser("logs")
    api_logs.add_argument("request_id")
    api_cancel = api_p.add_parser("cancel")
    api_cancel.add_argument("request_ids", nargs="+")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    handler = {
        "launch": launch,
        "exec": exec_task,
        "down": down_or_stop,
        "stop": down_or_stop,
        "status": status,
        "api": api,
    }
    try:
        return asyncio.run(handler[args.command](args))
    except SkyPilotError as error:
        return _fail(error)


if __name__ == "__main__":
    sys.exit(main())
