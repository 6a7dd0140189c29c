#!/usr/bin/env python3
"""A scripted stand-in for SkyPilot 0.14.1's ``sky`` CLI (launch, down, stop, status).

It prints what the real CLI prints, with the same exit codes, as observed with no cloud access:
failures as ``sky.exceptions.<Name>: <message>`` on stderr with exit 1; down/stop of an unknown
cluster as ``Cluster(s) not found`` on stdout with exit 0; ``status -o json`` as log lines
followed by an indented JSON list. It never prints a secret value on its own.

Environment interface (all optional):

``FAKE_SKY_STATE``
    Path of a JSON file, read and rewritten by every call::

        {"clusters": {"<name>": {"status": "UP", ...record fields}},
         "failures": {"<subcommand>": <failure>},
         "launch_status": "UP"}

    A launch adds the cluster (status ``launch_status``), down removes it, stop marks it
    STOPPED. Each launch also records a request in ``"requests"`` (``request_id``, ``name``,
    ``cluster_name``, ``status``, ``created_at``), which ``api status -o json`` lists (newest
    first), ``api cancel <id>`` cancels when live, and ``api logs <id>`` waits for: a RUNNING
    one finishes SUCCEEDED then (its cluster UP), a FAILED one prints its ``error``. A
    ``<failure>`` makes the subcommand fail instead, one of:

    - ``{"error": "NoCloudAccessError", "message": "...", "module": "sky.exceptions"}``:
      ``<module>.<error>: <message>`` on stderr, exit ``exit_code`` (default 1). ``module`` may
      be ``""`` for builtins such as ValueError.
    - ``{"report": "sky.exceptions.CloudError: boom"}`` (down/stop only): the real CLI's
      per-cluster failure report on stdout, exit 0.
    - ``{"stdout": "...", "stderr": "...", "exit_code": N}``: exactly that output.

    ``"times": N`` in a failure makes only the next N calls fail.
``FAKE_SKY_LOG``
    Path of a JSON-lines file; each call appends ``{"argv", "pid", "pgid", "env", "task_file",
    "secret_file", "config_file"}``. Each file entry holds its path, its mode and its link
    count (0: no name in any file system), and its text; ``secret_file`` also the values
    python-dotenv parses from it (the real CLI's parser), so tests can compare them;
    ``config_file`` is the one SKYPILOT_GLOBAL_CONFIG names. ``env`` is the whole environment.
``FAKE_SKY_SLEEP``
    Seconds to sleep after logging and before acting (simulates a hang).
``FAKE_SKY_IGNORE_TERM=1``
    Ignore SIGTERM, so only SIGKILL stops it (and the grandchild, which inherits that).
``FAKE_SKY_GRANDCHILD=1``
    Start a sleeping grandchild in the same process group that inherits stdout/stderr; its
    pid is logged as ``grandchild``.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import signal
import stat
import subprocess
import sys
import time
from typing import Any, NoReturn

BOLD, RESET, GREEN = "\x1b[1m", "\x1b[0m", "\x1b[32m"


def usage_error(command: str, usage: str, message: str) -> NoReturn:
    """Click's format for a bad command line: exit 2."""
    sys.stderr.write(
        f"Usage: sky {command} [OPTIONS] {usage}\nTry 'sky {command} -h' for help.\n\n"
        f"Error: {message}\n"
    )
    sys.exit(2)


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        command = sys.argv[1] if len(sys.argv) > 1 else "COMMAND"
        usage_error(command, "...", message)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = Parser(prog="sky")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    launch = sub.add_parser("launch")
    launch.add_argument("-y", "--yes", action="store_true")
    launch.add_argument("-d", "--detach-run", action="store_true")
    launch.add_argument("-c", "--cluster")
    launch.add_argument("-w", "--workspace")
    launch.add_argument("-r", "--retry-until-up", action="store_true")
    launch.add_argument("--secret-file")
    launch.add_argument("--env", action="append", default=[])
    launch.add_argument("entrypoint", nargs="*")
    for name in ("down", "stop"):
        command = sub.add_parser(name)
        command.add_argument("-y", "--yes", action="store_true")
        command.add_argument("-p", "--purge", action="store_true")
        command.add_argument("clusters", nargs="*")
    status = sub.add_parser("status")
    status.add_argument("-o", "--output", choices=["table", "json"], default="table")
    status.add_argument("-u", "--all-users", action="store_true")
    for flag in ("managed-jobs", "services", "pools"):
        status.add_argument(f"--show-{flag}", dest=flag, action="store_true")
        status.add_argument(f"--no-show-{flag}", dest=flag, action="store_false")
    status.add_argument("-r", "--refresh", action="store_true")
    status.add_argument("clusters", nargs="*")
    api = sub.add_parser("api").add_subparsers(dest="api_command", required=True)
    api_status = api.add_parser("status")
    api_status.add_argument("-a", "--all-status", action="store_true")
    api_status.add_argument("-v", "--verbose", action="store_true")
    api_status.add_argument("-l", "--limit")
    api_status.add_argument("-o", "--output", default="table")
    api_status.add_argument("-c", "--cluster")
    api_logs = api.add_parser("logs")
    api_logs.add_argument("request_id")
    api_cancel = api.add_parser("cancel")
    api_cancel.add_argument("request_ids", nargs="*")
    return parser.parse_args(argv)


def load_state() -> dict[str, Any]:
    path = os.environ.get("FAKE_SKY_STATE")
    if not path or not os.path.exists(path):
        return {"clusters": {}, "failures": {}}
    with open(path, encoding="utf-8") as handle:
        state: dict[str, Any] = json.load(handle)
    state.setdefault("clusters", {})
    state.setdefault("failures", {})
    state.setdefault("requests", [])
    return state


def save_state(state: dict[str, Any]) -> None:
    path = os.environ.get("FAKE_SKY_STATE")
    if not path:
        return
    temp = f"{path}.{os.getpid()}.tmp"
    with open(temp, "w", encoding="utf-8") as handle:
        json.dump(state, handle, indent=2)
    os.replace(temp, path)


def describe_file(path: str | None) -> dict[str, Any] | None:
    if path is None or not os.path.isfile(path):
        return None
    info = os.stat(path)
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    return {"path": path, "mode": stat.S_IMODE(info.st_mode), "nlink": info.st_nlink, "text": text}


def record_call(args: argparse.Namespace, extra: dict[str, Any]) -> None:
    path = os.environ.get("FAKE_SKY_LOG")
    if not path:
        return
    entry = {
        "argv": sys.argv[1:],
        "pid": os.getpid(),
        "pgid": os.getpgrp(),
        "env": dict(os.environ),
        **extra,
    }
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")


def take_failure(state: dict[str, Any], command: str) -> dict[str, Any] | None:
    failure: dict[str, Any] | None = state["failures"].get(command)
    if failure is None:
        return None
    if "times" in failure:
        failure["times"] -= 1
        if failure["times"] <= 0:
            del state["failures"][command]
        save_state(state)
    return failure


def fail(failure: dict[str, Any]) -> NoReturn:
    if "error" in failure:
        module = failure.get("module", "sky.exceptions")
        name = f"{module}.{failure['error']}" if module else failure["error"]
        sys.stdout.write(failure.get("stdout", ""))
        sys.stderr.write(f"{name}: {failure.get('message', '')}\n")
    else:
        sys.stdout.write(failure.get("stdout", ""))
        sys.stderr.write(failure.get("stderr", ""))
    sys.stdout.flush()
    sys.exit(int(failure.get("exit_code", 1)))


def record(name: str, fields: dict[str, Any]) -> dict[str, Any]:
    """A `sky status -o json` entry: StatusResponse.model_dump(mode="json") minus handle."""
    now = int(time.time())
    base: dict[str, Any] = {
        "name": name,
        "launched_at": now,
        "last_use": "sky launch",
        "status": "UP",
        "autostop": 30,
        "to_down": False,
        "owner": None,
        "metadata": {},
        "cluster_hash": "0123abcd",
        "cluster_ever_up": True,
        "status_updated_at": now,
        "user_hash": "c0a7b1e5",
        "user_name": "controlplane",
        "config_hash": None,
        "workspace": "default",
        "last_creation_yaml": None,
        "last_creation_command": None,
        "is_managed": False,
        "last_event": None,
        "init_kind": None,
        "init_status_reason": None,
        "resources_str": "1x Kubernetes(4CPU--16GB--1xL4)",
        "resources_str_full": None,
        "nodes": 1,
        "cloud": "Kubernetes",
        "region": "in-cluster",
        "cpus": "4",
        "memory": "16",
        "accelerators": "{'L4': 1}",
        "labels": None,
        "cluster_name_on_cloud": f"{name}-0123",
        "node_names": None,
        "priority": None,
        "priority_class": None,
        "links": None,
    }
    base.update(fields)
    return base


def not_found_line(names: list[str]) -> str:
    return f"Cluster(s) not found: {BOLD}{', '.join(names)}{RESET}.\n"


def matching(state: dict[str, Any], patterns: list[str]) -> tuple[list[str], list[str]]:
    """Cluster names matching the CLI's arguments (globs, as the real CLI) and misses."""
    found: list[str] = []
    missing: list[str] = []
    for pattern in patterns:
        hits = fnmatch.filter(state["clusters"], pattern)
        found += [hit for hit in hits if hit not in found]
        if not hits:
            missing.append(pattern)
    return found, missing


def add_request(state: dict[str, Any], cluster: str, status: str, **extra: Any) -> None:
    request_id = f"{len(state['requests']) + 1:08d}-0000-4000-8000-000000000000"
    state["requests"].append(
        {
            "request_id": request_id,
            "name": "sky.launch",
            "user_id": "c0a7b1e5",
            "status": status,
            "created_at": time.time(),
            "cluster_name": cluster,
            **extra,
        }
    )


def do_launch(args: argparse.Namespace, state: dict[str, Any]) -> int:
    entry = args.entrypoint[0] if args.entrypoint else "<none>"
    sys.stdout.write(f"YAML to run: {entry}\n")
    failure = take_failure(state, "launch")
    if failure is not None:
        add_request(state, args.cluster, "FAILED", error=failure)
        save_state(state)
        sys.stdout.write(f"Running on cluster: {args.cluster}\n")
        fail(failure)
    add_request(state, args.cluster, "SUCCEEDED")
    sys.stdout.write(f"Running on cluster: {args.cluster}\n")
    state["clusters"][args.cluster] = record(
        args.cluster,
        {
            **state["clusters"].get(args.cluster, {}),
            "status": state.get("launch_status", "UP"),
            "workspace": args.workspace or "default",
        },
    )
    save_state(state)
    sys.stdout.write(f"{GREEN}✓ Cluster launched: {args.cluster}.{RESET}\n")
    sys.stdout.write("Job submitted, ID: 1\n")
    return 0


def do_down_or_stop(args: argparse.Namespace, state: dict[str, Any]) -> int:
    if not args.clusters:
        usage_error(args.command, "[CLUSTERS]...", f"`sky {args.command}` requires a cluster name")
    names, missing = matching(state, args.clusters)
    if missing:
        sys.stdout.write(not_found_line(missing))
    if not names:
        sys.stdout.write("Cluster(s) not found (tip: see `sky status`).\n")
        return 0
    failure = take_failure(state, args.command)
    if failure is not None and "report" not in failure:
        fail(failure)
    operation = "Terminating" if args.command == "down" else "Stopping"
    sys.stdout.write("\n")
    for name in names:
        if failure is not None:
            sys.stdout.write(
                f"\x1b[31m{operation} cluster {name}...failed. {RESET}\n"
                f"Reason: {failure['report']}.\n"
            )
            continue
        if args.command == "down":
            del state["clusters"][name]
        else:
            state["clusters"][name]["status"] = "STOPPED"
        sys.stdout.write(f"{GREEN}{operation} cluster {name}...done.{RESET}\n")
    save_state(state)
    if failure is not None:
        sys.stdout.write("Cluster(s) failed. See details above.")
        if args.command == "down":
            sys.stdout.write(
                " If you want to ignore the errors and remove the cluster(s) from the status "
                "table, use `sky down --purge`."
            )
        sys.stdout.write("\n")
    return 0


def do_status(args: argparse.Namespace, state: dict[str, Any]) -> int:
    if args.output != "json":
        usage_error("status", "[CLUSTERS]...", "this fake only prints `-o json`")
    failure = take_failure(state, "status")
    if failure is not None:
        fail(failure)
    if args.clusters:
        names, missing = matching(state, args.clusters)
        if missing:
            sys.stdout.write(not_found_line(missing))
    else:
        names = list(state["clusters"])
    records = [record(name, state["clusters"][name]) for name in names]
    sys.stdout.write(json.dumps(records, indent=2) + "\n")
    return 0


def do_api(args: argparse.Namespace, state: dict[str, Any]) -> int:
    requests = state["requests"]
    if args.api_command == "status":
        failure = take_failure(state, "api status")
        if failure is not None:
            fail(failure)
        listed = [
            {key: r[key] for key in ("request_id", "name", "user_id", "status", "created_at")}
            | {"cluster_name": r["cluster_name"]}
            for r in reversed(requests)
            if (args.cluster is None or r["cluster_name"] == args.cluster)
            and (args.all_status or r["status"] in ("PENDING", "RUNNING"))
        ]
        sys.stdout.write("The flag is ignored because the server does not support it yet.\n")
        sys.stdout.write(json.dumps(listed, indent=2) + "\n")
        return 0
    if args.api_command == "cancel":
        if not args.request_ids:
            sys.stdout.write("No requests need to be cancelled.\n")  # what the real one says
            return 0
        cancelled = []
        for request in requests:
            if request["request_id"] in args.request_ids and request["status"] == "RUNNING":
                request["status"] = "CANCELLED"
                cancelled.append(request["request_id"])
        save_state(state)
        if not cancelled:
            sys.stdout.write(f"{GREEN}No requests need to be cancelled.{RESET}\n")
        elif len(cancelled) == 1:
            sys.stdout.write(f"{GREEN}Cancelled 1 request: {cancelled[0]}{RESET}\n")
        else:
            sys.stdout.write(f"{GREEN}Cancelled {len(cancelled)} requests.{RESET}\n")
        return 0
    for request in requests:  # logs
        if request["request_id"] == args.request_id:
            if request["status"] == "RUNNING":
                request["status"] = "SUCCEEDED"
                cluster = request["cluster_name"]
                state["clusters"][cluster] = record(cluster, {"status": "UP"})
                save_state(state)
            if request["status"] == "FAILED":
                fail(request["error"])
            if request["status"] == "CANCELLED":
                fail({"error": "RequestCancelled", "message": "cancelled by another process."})
            sys.stdout.write(f"{GREEN}✓ Cluster launched: {request['cluster_name']}.{RESET}\n")
            return 0
    fail({"error": "ClientError", "message": f"Failed to stream logs: {args.request_id}"})


def main() -> int:
    args = parse_args(sys.argv[1:])
    extra: dict[str, Any] = {"task_file": None, "secret_file": None}
    if args.command == "launch":
        if args.secret_file is not None and not os.path.isfile(args.secret_file):
            usage_error(
                "launch",
                "[ENTRYPOINT]...",
                f"Dotenv file does not exist: {args.secret_file}. Provide a path to an "
                "existing file, or remove the flag.",
            )
        task = describe_file(args.entrypoint[0] if args.entrypoint else None)
        secret = describe_file(args.secret_file)
        if secret is not None:
            from dotenv import dotenv_values  # the parser the real CLI uses for --secret-file

            secret["values"] = dict(dotenv_values(secret["path"]))
        extra = {"task_file": task, "secret_file": secret}
    extra["config_file"] = describe_file(os.environ.get("SKYPILOT_GLOBAL_CONFIG"))
    if os.environ.get("FAKE_SKY_IGNORE_TERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if os.environ.get("FAKE_SKY_GRANDCHILD") == "1":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        extra["grandchild"] = child.pid
    record_call(args, extra)
    time.sleep(float(os.environ.get("FAKE_SKY_SLEEP", "0")))
    state = load_state()
    if args.command == "launch":
        return do_launch(args, state)
    if args.command in ("down", "stop"):
        return do_down_or_stop(args, state)
    if args.command == "api":
        return do_api(args, state)
    return do_status(args, state)


if __name__ == "__main__":
    sys.exit(main())
