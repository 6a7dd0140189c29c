"""A `sky`-compatible command line backed by the simulator, so CLI mode runs end to end locally.

It answers the subcommands the CLI runner uses — ``launch``, ``down``, ``stop``,
``status -o json`` and ``status --endpoint`` — with the real 0.14.1 CLI's exit codes and the
output lines the runner reads, against the API server at SKYPILOT_API_SERVER_ENDPOINT (as the
real CLI does). Secrets arrive in a ``--secret-file`` (dotenv) and go into the task's
``secrets:``, never onto a command line.

    SKYPILOT_API_SERVER_ENDPOINT=http://127.0.0.1:46590 \\
        python -m controlplane.skypilot.sim.sky_cli launch -y -d -c c1 --secret-file s.env task.yaml
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

import yaml
from dotenv import dotenv_values
from pydantic import SecretStr

from controlplane.skypilot.client import SkyPilotClient
from controlplane.skypilot.errors import SkyPilotError
from controlplane.skypilot.retry import RetryPolicy
from controlplane.skypilot.task import SkyTask

DEFAULT_ENDPOINT = "http://127.0.0.1:46580"


def _client() -> SkyPilotClient:
    endpoint = os.environ.get("SKYPILOT_API_SERVER_ENDPOINT", DEFAULT_ENDPOINT)
    token = os.environ.get("SKYPILOT_SERVICE_ACCOUNT_TOKEN")
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


async def launch(args: argparse.Namespace) -> int:
    document = yaml.safe_load(await asyncio.to_thread(Path(args.entrypoint).read_text))
    secrets = {}
    if args.secret_file:
        values = dotenv_values(args.secret_file)
        secrets = {k: SecretStr(v or "") for k, v in values.items()}
    task = SkyTask(name=args.cluster, document=document, secrets=secrets)
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
    launch_p.add_argument("entrypoint")
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
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    handler = {"launch": launch, "down": down_or_stop, "stop": down_or_stop, "status": status}
    try:
        return asyncio.run(handler[args.command](args))
    except SkyPilotError as error:
        return _fail(error)


if __name__ == "__main__":
    sys.exit(main())
