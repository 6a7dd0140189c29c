"""Run SkyPilot through its ``sky`` CLI, for deployments without an API server URL.

Same operations and the same error taxonomy as the REST client, so callers decide with
``retryable`` / ``not_found`` whichever mode is configured. The child gets its arguments as a
list (never a shell), every call has a deadline after which the child's whole process group is
killed, and the child sees an allow-listed environment only (cli_child.py: the real client copies
every ``SKYPILOT_*`` variable into its request bodies). Secret values travel only in anonymous
in-memory files the child reads as ``/dev/fd/N`` (the ``--secret-file``, and the client config
with the token): never in argv (``ps`` shows it), the environment, a file on disk that could
outlive a SIGKILL, log lines or exception messages.

A launch carries the REST client's marker (``controlplane launch <cluster> key=<node id>``) in
its ``entrypoint_command``, which the real CLI builds from its argv: it is passed as
``--env CONTROLPLANE_LAUNCH_MARKER=<marker>``. ``sky api status`` (which cannot show that field)
finds a cluster's launch requests, ``sky api logs <id>`` reattaches to one and ``sky api cancel
<id>`` cancels one, always with explicit ids.

Output formats and exit codes below were observed on the real 0.14.1 CLI (no cloud access):

- ``sky launch`` failing: exit 1, stderr ``sky.exceptions.NoCloudAccessError: Cloud access is
  not set up. Run: \\x1b[1msky check\\x1b[0m``; other failures print ``<dotted class>: <message>``.
- ``sky down|stop -y <unknown>``: exit **0**, stdout ``Cluster(s) not found: <name>.`` and
  ``Cluster(s) not found (tip: see `sky status`).``. Per the CLI source, a down/stop that fails
  on the server is reported on stdout, also with exit 0: ``Reason: <class>: <message>.`` and
  ``Cluster(s) failed. See details above.``.
- ``sky status -o json [names]``: exit 0, stdout may start with log lines (``Cluster(s) not
  found: ...``, ``Starting a local server``) before the indented JSON list; ``[]`` when empty.
- An unreachable API server: exit 1, ``sky.exceptions.ApiServerConnectionError: ...``. On a
  cold start (no local server yet) ``sky status -o json <name>`` fails once with
  ``requests.exceptions.ConnectionError: ... /workspaces ...``: unreachable, so retryable.
- Click usage errors: exit 2, stderr ``Usage: ...`` and ``Error: <message>``.
- ``sky api status -a -v -l none -o json -c <cluster>``: exit 0, stdout may start with ``The flag
  is ignored because the server does not support it yet.`` before the JSON list of requests
  (``request_id``, ``name``, ``user_id``, ``status``, ``created_at``, ``cluster_name``).
- ``sky api cancel <id>``: exit 0, ``Cancelled 1 request: <id>`` or ``No requests need to be
  cancelled.``; with no id and no ``--all`` it would cancel nothing, with ``--all`` everything.
- ``sky api logs <id>``: streams the request's logs, then exits like the command that sent it
  (0, or 1 with ``<dotted class>: <message>``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from controlplane.cluster_names import SKYPILOT_CLUSTER_NAME_RE
from controlplane.skypilot.cli_child import (
    CONFIG_ENV,
    ServerAccess,
    anonymous_files,
    child_environment,
    fd_path,
)
from controlplane.skypilot.errors import (
    APIError,
    AuthenticationError,
    CommandError,
    CommandTimeoutError,
    InvalidTaskError,
    RequestFailedError,
    ServerUnreachableError,
    SkyPilotError,
    VersionMismatchError,
    strip_ansi,
)
from controlplane.skypilot.models import (
    ClusterRecord,
    ClusterStatus,
    RequestRecord,
    TerminateResult,
)
from controlplane.skypilot.task import SkyTask

log = logging.getLogger(__name__)

# SkyPilot's cluster-name pattern, checked here because names are also CLI arguments and globs
# to `sky down`: a name such as "-a" or "*" must never reach the command line.
CLUSTER_NAME_RE = SKYPILOT_CLUSTER_NAME_RE
WORKSPACE_NAME_RE = re.compile(r"[a-z]([-_a-z0-9]*[a-z0-9])?")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REQUEST_ID_RE = re.compile(r"[0-9A-Za-z][-0-9A-Za-z]*")  # server-made uuids; never a flag
MARKER_ENV = "CONTROLPLANE_LAUNCH_MARKER"
_CANCELLED_ONE = re.compile(r"^Cancelled 1 request: (\S+)", re.MULTILINE)

MAX_CAPTURE = 8 * 1024 * 1024  # tail of each stream kept in memory
MAX_MESSAGE = 500
_SUMMARY_LINES = 5
_PIPE_GRACE_S = 1.0  # how long to keep reading after exit, in case a grandchild holds a pipe

# python-dotenv (what the CLI parses --secret-file with) decodes these escapes inside double
# quotes, and expands ${NAME} in every value with no escape for "$". "${:-$}" is a variable
# with an empty name, which can never be set, and default "$": it expands to a literal "$".
_DOTENV_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "$": "${:-$}"})

# Exception names printed without a module or without an Error/Exception suffix.
_KNOWN_EXCEPTIONS = frozenset(
    {
        "ClusterDoesNotExist",
        "InvalidCloudConfigs",
        "InvalidCloudCredentials",
        "RequestCancelled",
        "UserRequestRejectedByPolicy",
    }
)
# Failures that are the server's state, not the request's: same classes as in API mode.
_UNREACHABLE = frozenset(
    {
        "ApiServerConnectionError",
        "ConnectionError",
        "ConnectionRefusedError",
        "NewConnectionError",
        "MaxRetryError",
        "ConnectTimeout",
        "RemoteDisconnected",
    }
)
_BUSY = frozenset({"ServerTemporarilyUnavailableError", "ConcurrentWorkerExhaustedError"})
_EXCEPTION_LINE = re.compile(
    r"^\[?(?P<path>(?:[A-Za-z_]\w*\.)*(?P<name>[A-Z]\w*))(?:\]\s?|:\s?|$)(?P<message>.*)$"
)
_NOISE = re.compile(
    r"^(Traceback \(most recent call last\):|File \"|The above exception was|"
    r"During handling of the above exception|Cluster\(s\) failed\.|[~^ ]+$)"
)
_NOT_FOUND_REPORT = re.compile(r"^Cluster\(s\) not found\b", re.MULTILINE)
_FAILED_REPORT = re.compile(r"^Cluster\(s\) failed\.", re.MULTILINE)


RecordT = TypeVar("RecordT", bound=BaseModel)


@dataclass(frozen=True)
class Completed:
    """A finished `sky` run; both streams are ANSI-stripped with secret values scrubbed."""

    returncode: int
    stdout: str
    stderr: str


class SkyCLI:
    """SkyPilot operations through the `sky` executable at ``sky_path`` (SKYPILOT_CLI_PATH)."""

    def __init__(
        self,
        sky_path: str = "sky",
        *,
        launch_timeout: float,
        terminate_timeout: float,
        status_timeout: float,
        server: ServerAccess | None = None,
        identity: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        kill_grace: float = 5.0,
    ) -> None:
        """``server`` is handed over in a config memfd, ``identity`` (SKYPILOT_USER_ID and
        SKYPILOT_USER, as API mode sends them) and ``env`` as variables; nothing else of the
        worker's environment but the allow-list in cli_child.py."""
        self.sky_path = sky_path
        self.launch_timeout = launch_timeout
        self.terminate_timeout = terminate_timeout
        self.status_timeout = status_timeout
        self.server = server or ServerAccess()
        self.identity = dict(identity or {})
        self.env = dict(env or {})
        self.kill_grace = kill_grace

    def __repr__(self) -> str:
        return f"SkyCLI(sky_path={self.sky_path!r})"

    async def launch(
        self,
        cluster_name: str,
        task: SkyTask,
        *,
        workspace: str | None = None,
        retry_until_up: bool = False,
        marker: str | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        """Provision the cluster and submit the task (detached); returns once it is submitted.

        ``on_line`` gets each stdout line as it arrives (secrets replaced), for progress.
        """
        operation = "sky.launch"
        _check_cluster_name(cluster_name, operation)
        if workspace is not None and not WORKSPACE_NAME_RE.fullmatch(workspace):
            raise RequestFailedError(
                f"invalid workspace name {workspace!r}",
                operation=operation,
                error_type="InvalidWorkspaceNameError",
            )
        if marker is not None and ("\n" in marker or "\x00" in marker):
            raise InvalidTaskError("the launch marker must be one line", operation=operation)

        def argv(task_path: str, secret_file: str | None) -> list[str]:
            args = ["launch", "-y", "-d", "-c", cluster_name]
            if workspace is not None:
                args += ["--workspace", workspace]
            if retry_until_up:
                args.append("--retry-until-up")
            if marker is not None:
                args += ["--env", f"{MARKER_ENV}={marker}"]
            if secret_file is not None:
                args += ["--secret-file", secret_file]
            return [*args, "--", task_path]

        await self._run_task(operation, cluster_name, task, argv, on_line=on_line)

    async def launch_requests(self, cluster_name: str) -> list[RequestRecord]:
        """Every ``sky.launch`` request the server keeps for the cluster, newest first."""
        operation = "sky.api_status"
        _check_cluster_name(cluster_name, operation)
        args = ["api", "status", "-a", "-v", "-l", "none", "-o", "json", "-c", cluster_name]
        records = await self._json_records(
            operation, args, RequestRecord, subject=cluster_name, command="sky api status"
        )
        # An older server ignores the cluster filter (the CLI warns): filter here as well.
        mine = [r for r in records if r.cluster_name == cluster_name and r.name == "sky.launch"]
        return sorted(mine, key=lambda r: r.created_at or 0.0, reverse=True)

    async def follow(
        self, request_id: str, *, subject: str, on_line: Callable[[str], None] | None = None
    ) -> None:
        """Wait for a request with ``sky api logs``; raise its error as ``sky launch`` would.

        ``on_line`` gets the request's log lines as they are printed, as in ``launch``.
        """
        operation = "sky.launch"
        _check_request_id(request_id, operation)
        done = await self._run(
            operation, ["api", "logs", "--", request_id], timeout=self.launch_timeout,
            subject=subject, on_line=on_line,
        )  # fmt: skip
        if done.returncode != 0:
            raise error_from_output(operation, done)

    async def cancel(self, request_ids: Sequence[str], *, subject: str) -> list[str]:
        """Cancel exactly these requests (one ``sky api cancel <id>`` each); the ids cancelled.

        An empty list is refused: the server reads "no ids" as "all requests".
        """
        operation = "sky.api_cancel"
        if not request_ids:
            raise ValueError("cancel needs at least one request id; an empty list would cancel all")
        cancelled = []
        for request_id in request_ids:
            _check_request_id(request_id, operation)
            done = await self._run(
                operation, ["api", "cancel", "--", request_id], timeout=self.status_timeout,
                subject=subject,
            )  # fmt: skip
            if done.returncode != 0:
                raise error_from_output(operation, done)
            cancelled += _CANCELLED_ONE.findall(done.stdout)
        return cancelled

    async def exec(self, cluster_name: str, task: SkyTask, *, workspace: str | None = None) -> None:
        """`sky exec -d`: run the task as a new job on the existing cluster (no provisioning).

        Like ``launch``, the task and its secrets reach ``sky`` as anonymous in-memory files."""
        operation = "sky.exec"
        _check_cluster_name(cluster_name, operation)

        def argv(task_path: str, secret_file: str | None) -> list[str]:
            args = ["exec", "-d"]
            if workspace is not None:  # validated by the node's launch
                args += ["--workspace", workspace]
            if secret_file is not None:
                args += ["--secret-file", secret_file]
            return [*args, "--", cluster_name, task_path]

        await self._run_task(operation, cluster_name, task, argv)

    async def _run_task(
        self,
        operation: str,
        cluster_name: str,
        task: SkyTask,
        argv: Callable[[str, str | None], list[str]],
        *,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        """Run ``sky`` with the task's YAML and its secrets (a dotenv ``--secret-file``) as
        anonymous in-memory files: ``argv(task_path, secret_file_or_None)`` builds the command.
        Raises the command's error."""
        secrets = task.secret_values()
        files = {"task.yaml": task.render()}
        if secrets:
            files["secrets.env"] = render_dotenv(secrets)  # validates before sky runs
        with anonymous_files(files) as fds:
            secret_file = fd_path(fds["secrets.env"]) if secrets else None
            done = await self._run(
                operation,
                argv(fd_path(fds["task.yaml"]), secret_file),
                timeout=self.launch_timeout,
                subject=cluster_name,
                secrets=list(secrets.values()),
                pass_fds=tuple(fds.values()),
                on_line=on_line,
            )
        if done.returncode != 0:
            raise error_from_output(operation, done)

    async def down(self, cluster_name: str, *, purge: bool = False) -> TerminateResult:
        """Tear the cluster down. One SkyPilot does not know counts as done (``already_gone``)."""
        args = ["down", "-y", *(["--purge"] if purge else []), "--", cluster_name]
        gone = await self._down_or_stop("sky.down", args, cluster_name)
        return TerminateResult(cluster_name=cluster_name, already_gone=gone)

    async def stop(self, cluster_name: str) -> None:
        """Stop the cluster; an unknown one raises ClusterDoesNotExist, as in API mode."""
        operation = "sky.stop"
        if await self._down_or_stop(operation, ["stop", "-y", "--", cluster_name], cluster_name):
            raise RequestFailedError(
                f"Cluster {cluster_name!r} does not exist.",
                operation=operation,
                error_type="ClusterDoesNotExist",
            )

    async def status(self, cluster_names: Sequence[str] | None = None) -> list[ClusterRecord]:
        """Cluster records; a terminated or unknown cluster is simply absent."""
        operation = "sky.status"
        names = list(cluster_names or [])
        for name in names:
            _check_cluster_name(name, operation)
        args = ["status", "-o", "json"]
        if names:
            args += ["--", *names]
        else:  # like the REST client's all_users=True. No --no-show-* flags: with all three
            # the 0.14.1 CLI's first request skips its local-server auto-start and fails.
            args.append("--all-users")
        return await self._json_records(
            operation, args, ClusterRecord, subject=",".join(names) or "*", command="sky status"
        )

    async def _json_records(
        self,
        operation: str,
        args: list[str],
        model: type[RecordT],
        *,
        subject: str,
        command: str,
    ) -> list[RecordT]:
        """Run a ``-o json`` listing and keep the entries that parse (newer fields are ignored)."""
        done = await self._run(operation, args, timeout=self.status_timeout, subject=subject)
        if done.returncode != 0:
            raise error_from_output(operation, done)
        payload = find_json_list(done.stdout)
        if payload is None:
            raise CommandError(
                f"`{command} -o json` printed no JSON list: {_summary(done.stdout)}",
                operation=operation,
            )
        records = []
        for item in payload:
            with contextlib.suppress(ValidationError):
                records.append(model.model_validate(item))
        return records

    async def cluster_status(self, cluster_name: str) -> ClusterStatus:
        """The cluster's status; TERMINATED when SkyPilot does not list it."""
        for record in await self.status([cluster_name]):
            if record.name == cluster_name:
                return record.status
        return ClusterStatus.TERMINATED

    async def endpoint(self, cluster_name: str, port: int) -> str | None:
        """``sky status --endpoint PORT C`` prints the port's URL as its last line."""
        operation = "sky.endpoints"
        _check_cluster_name(cluster_name, operation)
        args = ["status", "--endpoint", str(int(port)), "--", cluster_name]
        done = await self._run(operation, args, timeout=self.status_timeout, subject=cluster_name)
        if done.returncode != 0:
            raise error_from_output(operation, done)
        lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
        return lines[-1] if lines else None

    async def _down_or_stop(self, operation: str, args: list[str], cluster_name: str) -> bool:
        """Run down/stop; True when the cluster did not exist. Failures exit 0 on the real CLI."""
        _check_cluster_name(cluster_name, operation)
        done = await self._run(
            operation, args, timeout=self.terminate_timeout, subject=cluster_name
        )
        if done.returncode != 0:
            error = error_from_output(operation, done)
            if error.not_found:  # the cluster vanished between the CLI's lookup and the call
                return True
            raise error
        if _FAILED_REPORT.search(done.stdout):
            raise error_from_output(operation, done)
        return bool(_NOT_FOUND_REPORT.search(done.stdout))

    def _child_env(self) -> dict[str, str]:
        # Allow-listed names only, so never an empty one: "${:-$}" stays a literal "$".
        return child_environment(self.identity, self.env, os.environ)

    async def _run(
        self,
        operation: str,
        args: Sequence[str],
        *,
        timeout: float,
        subject: str,
        secrets: Collection[str] = (),
        pass_fds: Sequence[int] = (),
        on_line: Callable[[str], None] | None = None,
    ) -> Completed:
        """Run `sky <args>` in its own session; kill its process group on timeout or cancel."""
        config = self.server.config_text()
        with anonymous_files({"config.yaml": config} if config else {}) as config_fd:
            env = self._child_env()
            if config_fd:
                env[CONFIG_ENV] = fd_path(config_fd["config.yaml"])
            return await self._run_child(
                operation,
                args,
                timeout=timeout,
                subject=subject,
                secrets=[*secrets, *self._server_secrets()],
                env=env,
                pass_fds=(*pass_fds, *config_fd.values()),
                on_line=on_line,
            )

    def _server_secrets(self) -> list[str]:
        return [self.server.token.get_secret_value()] if self.server.token is not None else []

    async def _run_child(
        self,
        operation: str,
        args: Sequence[str],
        *,
        timeout: float,
        subject: str,
        secrets: Collection[str],
        env: Mapping[str, str],
        pass_fds: Sequence[int],
        on_line: Callable[[str], None] | None = None,
    ) -> Completed:
        verb = " ".join(args[:2]) if args[0] == "api" else args[0]
        argv = [self.sky_path, *args]
        log.info("sky %s: cluster=%s", verb, subject)
        log.debug("argv: %s", argv)  # argv never holds a secret value
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=dict(env),
                start_new_session=True,
                pass_fds=tuple(pass_fds),
            )
        except FileNotFoundError:
            raise CommandError(
                f"SkyPilot CLI not found at {self.sky_path!r} (or its interpreter is missing): "
                "install skypilot or set SKYPILOT_CLI_PATH to the `sky` executable",
                operation=operation,
            ) from None
        except OSError as exc:
            raise CommandError(
                f"cannot run the SkyPilot CLI at {self.sky_path!r}: {exc.strerror}; "
                "check SKYPILOT_CLI_PATH",
                operation=operation,
            ) from None
        assert proc.stdout is not None
        assert proc.stderr is not None
        captured = (bytearray(), bytearray())  # filled as output arrives, kept if cut off
        readers = [
            asyncio.create_task(
                _drain(proc.stdout, captured[0], _line_sink(on_line, secrets) if on_line else None)
            ),
            asyncio.create_task(_drain(proc.stderr, captured[1])),
        ]
        pending: set[asyncio.Task[None]] = set(readers)
        try:
            try:
                returncode = await asyncio.wait_for(_exited(proc), timeout)
            except TimeoutError:
                log.warning("sky %s: cluster=%s timed out after %gs", verb, subject, timeout)
                raise CommandTimeoutError(
                    f"`sky {verb}` for {subject} did not finish within {timeout:g}s; killed",
                    operation=operation,
                ) from None
            _, pending = await asyncio.wait(readers, timeout=_PIPE_GRACE_S)
        finally:
            if proc.returncode is None:  # timed out or cancelled
                await _kill_group(proc, self.kill_grace)
            elif pending:  # the CLI exited but something it started still holds our pipes
                _signal_group(proc.pid, signal.SIGKILL)
            for reader in readers:
                reader.cancel()
        stdout, stderr = (_clean(bytes(buffer), secrets) for buffer in captured)
        log.info(
            "sky %s: cluster=%s exit=%d after %.1fs",
            verb,
            subject,
            returncode,
            time.monotonic() - started,
        )
        return Completed(returncode, stdout, stderr)


def render_dotenv(values: Mapping[str, str]) -> str:
    """The --secret-file text that python-dotenv (the CLI's parser) reads back exactly."""
    lines = []
    for key, value in values.items():
        if not _ENV_NAME_RE.fullmatch(key):
            raise InvalidTaskError(f"secret name {key!r} is not a valid environment variable name")
        if "\x00" in value:
            raise InvalidTaskError(f"secret {key} contains a NUL character")
        lines.append(f'{key}="{value.translate(_DOTENV_ESCAPES)}"\n')
    return "".join(lines)


def find_json_list(text: str) -> list[Any] | None:
    """The JSON list `sky status -o json` prints after any log lines (the last one wins)."""
    decoder = json.JSONDecoder()
    for match in reversed(list(re.finditer(r"^\[", text, re.MULTILINE))):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, list):
            return value
    return None


def error_from_output(operation: str, done: Completed) -> SkyPilotError:
    """The taxonomy error for a failed run, from the exception the CLI printed last."""
    found = _find_exception(done.stderr) or _find_exception(done.stdout)
    if found is not None:
        name, message = found
        text = message or name
        if name in _UNREACHABLE:
            return ServerUnreachableError(f"{name}: {text}", operation=operation, error_type=name)
        if name == "ApiServerAuthenticationError":
            return AuthenticationError(text, operation=operation, error_type=name)
        if name == "APIVersionMismatchError":
            return VersionMismatchError(text, operation=operation, error_type=name)
        if name in _BUSY:  # a 503 in API mode
            return APIError(f"{name}: {text}", operation=operation, http_status=503)
        return RequestFailedError(text, operation=operation, error_type=name)
    code = done.returncode
    how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
    summary = _summary(done.stderr) or _summary(done.stdout) or "no output"
    return CommandError(f"`{operation.replace('.', ' ')}` {how}: {summary}", operation=operation)


def _find_exception(text: str) -> tuple[str, str] | None:
    """(class name, message) of the last exception line, e.g. ``sky.exceptions.X: message``."""
    lines = text.splitlines()
    found: tuple[str, str] | None = None
    for index, raw in enumerate(lines):
        line = raw.strip().removeprefix("Reason: ")  # how `sky down` reports a failure
        match = _EXCEPTION_LINE.match(line)
        if match is None:
            continue
        path, name = match["path"], match["name"]
        if not (
            path.startswith("sky.exceptions.")
            or name.endswith(("Error", "Exception"))
            or name in _KNOWN_EXCEPTIONS
        ) or name in ("Error", "Exception"):
            continue
        message = [match["message"].strip()]
        for follow in lines[index + 1 :]:
            if not follow.strip() or _NOISE.match(follow.strip()):
                break
            message.append(follow.strip())
        found = name, _bounded(" ".join(part for part in message if part))
    return found


def _summary(text: str) -> str:
    """The last meaningful lines of CLI output, on one line, bounded."""
    lines = [line.strip() for line in text.splitlines()]
    useful = [line for line in lines if line and not _NOISE.match(line)]
    summary = " | ".join(useful[-_SUMMARY_LINES:])
    return summary if len(summary) <= MAX_MESSAGE else "…" + summary[-MAX_MESSAGE:]


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "…"


def _clean(raw: bytes, secrets: Collection[str]) -> str:
    """Decode, strip colours and replace every form of a secret value with ``***``."""
    text = strip_ansi(raw.decode("utf-8", errors="replace"))
    needles: set[str] = set()
    for value in secrets:
        if not value:
            continue
        needles |= {value, value.translate(_DOTENV_ESCAPES), json.dumps(value)[1:-1]}
        needles.add(repr(value)[1:-1])
        needles |= {line for line in value.splitlines() if len(line.strip()) >= 4}
    for needle in sorted(needles, key=len, reverse=True):
        text = text.replace(needle, "***")
    return text


def _check_request_id(request_id: str, operation: str) -> None:
    if not _REQUEST_ID_RE.fullmatch(request_id):
        raise ValueError(f"invalid request id {request_id!r} for {operation}")


def _check_cluster_name(name: str, operation: str) -> None:
    if not CLUSTER_NAME_RE.fullmatch(name):
        raise RequestFailedError(
            f"invalid cluster name {name!r}: expected {CLUSTER_NAME_RE.pattern}",
            operation=operation,
            error_type="InvalidClusterNameError",
        )


def _line_sink(on_line: Callable[[str], None], secrets: Collection[str]) -> Callable[[bytes], None]:
    """Split output into lines, clean each (colours, secrets) and hand it on."""
    partial = bytearray()

    def feed(chunk: bytes) -> None:
        partial.extend(chunk)
        *lines, rest = bytes(partial).split(b"\n")
        partial[:] = rest[:MAX_MESSAGE]
        for line in lines:
            if line.strip():
                on_line(_clean(line, secrets))

    return feed


async def _drain(
    stream: asyncio.StreamReader, buffer: bytearray, feed: Callable[[bytes], None] | None = None
) -> None:
    """Read to EOF into ``buffer``, keeping its last MAX_CAPTURE bytes."""
    while chunk := await stream.read(65536):
        if feed is not None:
            feed(chunk)
        buffer += chunk
        if len(buffer) > MAX_CAPTURE:
            del buffer[: len(buffer) - MAX_CAPTURE]
    if feed is not None:
        feed(b"\n")  # the last line, if it had no end


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    if pgid == os.getpgrp():  # never our own group
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _exited(proc: asyncio.subprocess.Process) -> int:
    """The exit code as soon as the child exits: ``proc.wait()`` also waits for its pipes to
    close, which a grandchild left holding them can delay indefinitely."""
    while proc.returncode is None:  # noqa: ASYNC110 - the transport offers no exit-only event
        await asyncio.sleep(0.05)
    return proc.returncode


async def _kill_group(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the child's session, wait ``grace`` seconds, then SIGKILL whatever is left."""
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(_exited(proc), grace)
    except TimeoutError:
        pass
    finally:  # also on a second cancellation, and for grandchildren that outlived the leader
        _signal_group(proc.pid, signal.SIGKILL)
    await _exited(proc)
