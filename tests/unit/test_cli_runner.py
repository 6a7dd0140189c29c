"""The `sky` CLI runner against the scripted stand-in (tests/fakes/fake_sky.py).

The stand-in prints the real 0.14.1 CLI's output formats and exit codes, records every call
(argv, pid/pgid, the secret file's mode and the values python-dotenv parses from it), and can be
scripted to fail or hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import shlex
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from dotenv import dotenv_values
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.skypilot import SkyPilotActivities
from controlplane.lifecycle import LaunchMode
from controlplane.skypilot.backend import ApiBackend, CliBackend, SkyPilotBackend
from controlplane.skypilot.cli import (
    Completed,
    SkyCLI,
    error_from_output,
    find_json_list,
    render_dotenv,
)
from controlplane.skypilot.cli_child import ServerAccess
from controlplane.skypilot.client import SkyPilotClient
from controlplane.skypilot.errors import (
    APIError,
    CommandError,
    CommandTimeoutError,
    InvalidTaskError,
    RequestFailedError,
    ServerUnreachableError,
    SkyPilotError,
    WaitTimeoutError,
)
from controlplane.skypilot.models import ClusterStatus
from controlplane.skypilot.task import SkyTask, TaskSettings
from devtools.skypilot_sim.config import SimConfig
from devtools.skypilot_sim.server import SimulatorServer
from workflows.models import WaitReadyInput

FAKE_SKY = Path(__file__).resolve().parents[1] / "fakes" / "fake_sky.py"
REPO = str(Path(__file__).resolve().parents[2])

HF_TOKEN = "hf_SuperSecretToken0123456789"
PEM = "-----BEGIN KEY-----\nMIIEsecretbody0123456789\n-----END KEY-----"
TRICKY = {
    "QUOTES": "it's a \"quoted\" 'value'",
    "DOLLARS": "$HOME ${HOME} ${HOME:-x} $$ ${:-$} \\${X} $",
    "HASH": "#not-a-comment # still the value",
    "SPACES": "  leading and trailing  ",
    "NEWLINES": "line1\nline2\r\nline3\r",
    "BACKSLASHES": "C:\\path\\n\\\\end\\",
    "EMPTY": "",
    "UNICODE": "ünïcødé €",
    "EQUALS": "a=b=c",
    "TABS": "a\tb",
}
NO_CLOUD = "Cloud access is not set up. Run: \x1b[1msky check\x1b[0m"
NO_CAPACITY = (
    "Failed to provision all possible launchable resources. Relax the task's resource "
    "requirements: \n 1x Kubernetes(1xL4)\nTo keep retrying until the cluster is up, use the "
    "`--retry-until-up` flag."
)


@dataclass
class Fake:
    sky: Path
    state: Path
    log: Path

    def script(self, **state: Any) -> None:
        self.state.write_text(json.dumps(state), encoding="utf-8")

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text(encoding="utf-8").splitlines()]

    def clusters(self) -> dict[str, Any]:
        clusters: dict[str, Any] = json.loads(self.state.read_text(encoding="utf-8"))["clusters"]
        return clusters

    def cli(self, *, timeout: float = 20.0, **env: str) -> SkyCLI:
        return SkyCLI(
            str(self.sky),
            launch_timeout=timeout,
            terminate_timeout=timeout,
            status_timeout=timeout,
            env={"FAKE_SKY_STATE": str(self.state), "FAKE_SKY_LOG": str(self.log), **env},
            kill_grace=0.3,
        )


@pytest.fixture
def fake(tmp_path: Path) -> Fake:
    sky = tmp_path / "bin" / "sky"
    sky.parent.mkdir()
    sky.write_text(
        f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(FAKE_SKY))} "$@"\n',
        encoding="utf-8",
    )
    sky.chmod(0o755)
    result = Fake(sky=sky, state=tmp_path / "state.json", log=tmp_path / "calls.jsonl")
    result.script(clusters={}, failures={})
    return result


def make_task(secrets: dict[str, str] | None = None) -> SkyTask:
    document = {"name": "node-1", "envs": {"MODEL_ID": "m"}, "run": "echo hi"}
    values = {"HF_TOKEN": HF_TOKEN} if secrets is None else secrets
    return SkyTask(
        name="node-1",
        document=document,
        secrets={key: SecretStr(value) for key, value in values.items()},
    )


def live_group_members(pgid: int) -> list[int]:
    """Processes still in the group, zombies excluded (PID 1 here may never reap them)."""
    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(entry))
    return alive


async def wait_group_gone(pgid: int) -> list[int]:
    """Members still alive after up to 3 s (SIGKILL is delivered asynchronously)."""
    for _ in range(60):
        if not (alive := live_group_members(pgid)):
            break
        await asyncio.sleep(0.05)
    return alive


def exists(path: str) -> bool:
    return Path(path).exists()


async def wait_for_call(fake: Fake) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while not fake.calls():
        assert time.monotonic() < deadline, "the fake sky never started"
        await asyncio.sleep(0.02)
    return fake.calls()[0]


def assert_no_secret(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in text
        for line in secret.splitlines():
            if len(line) >= 8:
                assert line not in text


# --- launch -------------------------------------------------------------------------------


async def test_launch_passes_argv_list_and_a_private_secret_file(fake: Fake) -> None:
    await fake.cli().launch("node-1", make_task(), workspace="team-a", retry_until_up=True)

    (call,) = fake.calls()
    secret_path = call["secret_file"]["path"]
    task_path = call["task_file"]["path"]
    assert call["argv"] == [
        "launch", "-y", "-d", "-c", "node-1", "--workspace", "team-a", "--retry-until-up",
        "--secret-file", secret_path, "--", task_path,
    ]  # fmt: skip
    assert call["secret_file"]["mode"] == 0o600
    assert secret_path.startswith("/dev/fd/")
    assert task_path.startswith("/dev/fd/")
    assert call["secret_file"]["nlink"] == 0, "the secret file must have no name on any disk"
    assert call["task_file"]["nlink"] == 0
    assert call["secret_file"]["values"] == {"HF_TOKEN": HF_TOKEN}
    assert HF_TOKEN not in json.dumps(call["argv"])
    assert HF_TOKEN not in call["task_file"]["text"]
    assert "HF_TOKEN: null" in call["task_file"]["text"]
    assert call["pgid"] == call["pid"], "sky must run in its own session"
    assert fake.clusters()["node-1"]["status"] == "UP"


async def test_launch_without_secrets_passes_no_secret_file(fake: Fake) -> None:
    await fake.cli().launch("node-1", make_task({}))

    (call,) = fake.calls()
    assert "--secret-file" not in call["argv"]
    assert call["argv"][:5] == ["launch", "-y", "-d", "-c", "node-1"]
    assert "--workspace" not in call["argv"]
    assert "--retry-until-up" not in call["argv"]


async def test_tricky_secret_values_round_trip_through_the_real_parser(fake: Fake) -> None:
    # python-dotenv expands ${HOME} from the CLI's environment unless the "$" is escaped.
    await fake.cli(HOME="/home/should-not-leak").launch("node-1", make_task(TRICKY))

    (call,) = fake.calls()
    assert call["secret_file"]["values"] == TRICKY
    assert_no_secret(json.dumps(call["argv"]), [v for v in TRICKY.values() if len(v) >= 8])


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00")))
def test_render_dotenv_round_trips_any_value(value: str) -> None:
    text = render_dotenv({"A": value, "B": "after"})
    assert dotenv_values(stream=io.StringIO(text)) == {"A": value, "B": "after"}


@pytest.mark.parametrize(
    "secrets",
    [{"BAD NAME": "x"}, {"1ST": "x"}, {"OK": "nul\x00byte"}],
)
async def test_unusable_secrets_are_rejected_before_sky_runs(
    fake: Fake, secrets: dict[str, str]
) -> None:
    with pytest.raises(InvalidTaskError) as caught:
        await fake.cli().launch("node-1", make_task(secrets))
    assert "nul\x00byte" not in str(caught.value)
    assert fake.calls() == []


async def test_no_cloud_access_is_a_request_failure_and_the_secret_file_is_removed(
    fake: Fake,
) -> None:
    fake.script(
        clusters={}, failures={"launch": {"error": "NoCloudAccessError", "message": NO_CLOUD}}
    )

    with pytest.raises(RequestFailedError) as caught:
        await fake.cli().launch("node-1", make_task())

    error = caught.value
    assert error.error_type == "NoCloudAccessError"
    assert error.operation == "sky.launch"
    assert error.message == "Cloud access is not set up. Run: sky check"
    assert not error.retryable
    assert not error.not_found
    assert fake.calls()[0]["secret_file"]["nlink"] == 0


async def test_resources_unavailable_is_retryable(fake: Fake) -> None:
    fake.script(
        clusters={},
        failures={"launch": {"error": "ResourcesUnavailableError", "message": NO_CAPACITY}},
    )

    with pytest.raises(RequestFailedError) as caught:
        await fake.cli().launch("node-1", make_task())

    assert caught.value.error_type == "ResourcesUnavailableError"
    assert caught.value.retryable
    assert "Failed to provision" in caught.value.message


@pytest.mark.parametrize(
    "failure",
    [
        {"error": "CommandError", "message": f"Command failed: export HF_TOKEN={HF_TOKEN}\n{PEM}"},
        {
            "stderr": f"Traceback (most recent call last):\nboom {HF_TOKEN}\n"
            f"  > {PEM.splitlines()[1]} <\n",
            "exit_code": 3,
        },
    ],
    ids=["classified", "unclassified"],
)
async def test_secret_values_never_reach_errors_or_logs(
    fake: Fake, failure: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    fake.script(clusters={}, failures={"launch": failure})
    caplog.set_level(logging.DEBUG, logger="controlplane.skypilot.cli")

    with pytest.raises(SkyPilotError) as caught:
        await fake.cli().launch("node-1", make_task({"HF_TOKEN": HF_TOKEN, "PEM": PEM}))

    for text in (str(caught.value), repr(caught.value), caught.value.message, caplog.text):
        assert_no_secret(text, [HF_TOKEN, PEM])
    assert "***" in caught.value.message
    assert "node-1" in caplog.text
    assert_no_secret(json.dumps(fake.calls()[0]["argv"]), [HF_TOKEN, PEM])


async def test_unclassified_failure_is_a_command_error_with_exit_code_and_last_lines(
    fake: Fake,
) -> None:
    stderr = "".join(f"noise {i}\n" for i in range(20)) + "final words\n"
    fake.script(clusters={}, failures={"launch": {"stderr": stderr, "exit_code": 7}})

    with pytest.raises(CommandError) as caught:
        await fake.cli().launch("node-1", make_task())

    assert type(caught.value) is CommandError
    assert "exited with code 7" in caught.value.message
    assert caught.value.message.endswith("noise 19 | final words")
    assert "noise 10" not in caught.value.message
    assert not caught.value.retryable


async def test_timeout_kills_the_whole_process_group(fake: Fake) -> None:
    cli = fake.cli(
        timeout=1.0, FAKE_SKY_SLEEP="8", FAKE_SKY_GRANDCHILD="1", FAKE_SKY_IGNORE_TERM="1"
    )
    started = time.monotonic()

    with pytest.raises(CommandTimeoutError) as caught:
        await cli.launch("node-1", make_task())

    assert time.monotonic() - started < 5
    assert caught.value.retryable
    assert caught.value.operation == "sky.launch"
    call = fake.calls()[0]
    assert call["pgid"] == call["pid"]
    assert await wait_group_gone(call["pgid"]) == []
    assert call["secret_file"]["nlink"] == 0


async def test_cancelling_the_caller_kills_the_child_and_removes_the_files(fake: Fake) -> None:
    cli = fake.cli(FAKE_SKY_SLEEP="30", FAKE_SKY_GRANDCHILD="1")
    launch = asyncio.create_task(cli.launch("node-1", make_task()))
    call = await wait_for_call(fake)

    launch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await launch

    assert await wait_group_gone(call["pgid"]) == []
    assert call["secret_file"]["nlink"] == 0
    assert "node-1" not in fake.clusters()


async def test_a_grandchild_holding_the_pipes_does_not_hold_up_the_call(fake: Fake) -> None:
    fake.script(clusters={"node-1": {"status": "UP"}}, failures={})
    started = time.monotonic()

    status = await fake.cli(FAKE_SKY_GRANDCHILD="1").cluster_status("node-1")

    assert status is ClusterStatus.UP
    assert time.monotonic() - started < 5  # the timeout is 20 s
    call = fake.calls()[0]
    assert await wait_group_gone(call["pgid"]) == []


async def test_missing_binary_names_the_path_and_the_setting(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "sky"
    cli = SkyCLI(str(missing), launch_timeout=5, terminate_timeout=5, status_timeout=5)

    with pytest.raises(CommandError) as caught:
        await cli.status()

    assert str(missing) in str(caught.value)
    assert "SKYPILOT_CLI_PATH" in str(caught.value)


async def test_non_executable_binary_names_the_setting(tmp_path: Path) -> None:
    plain = tmp_path / "sky"
    plain.write_text("not a program", encoding="utf-8")
    cli = SkyCLI(str(plain), launch_timeout=5, terminate_timeout=5, status_timeout=5)

    with pytest.raises(CommandError, match="SKYPILOT_CLI_PATH"):
        await cli.down("node-1")


@pytest.mark.parametrize("name", ["-a", "--all", "node-*", "bad name", ""])
async def test_unsafe_cluster_names_never_reach_the_command_line(fake: Fake, name: str) -> None:
    cli = fake.cli()
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: cli.down(name),
        lambda: cli.stop(name),
        lambda: cli.status([name]),
        lambda: cli.launch(name, make_task()),
    ]
    for call in calls:
        with pytest.raises(RequestFailedError) as caught:
            await call()
        assert caught.value.error_type == "InvalidClusterNameError"
    assert fake.calls() == []


async def test_env_is_passed_to_the_child(fake: Fake, tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    await fake.cli(HOME=home).status()

    (call,) = fake.calls()
    assert call["env"]["HOME"] == home
    assert call["env"]["PYTHONUTF8"] == "1"
    assert call["env"]["SKYPILOT_DISABLE_USAGE_COLLECTION"] == "1"


# --- down / stop --------------------------------------------------------------------------


async def test_down_of_a_missing_cluster_is_already_gone(fake: Fake) -> None:
    result = await fake.cli().down("gone-1")

    assert result.already_gone
    assert result.cluster_name == "gone-1"
    assert fake.calls()[0]["argv"] == ["down", "-y", "--", "gone-1"]


async def test_down_of_an_existing_cluster(fake: Fake) -> None:
    fake.script(clusters={"node-1": {"status": "UP"}, "node-2": {"status": "UP"}}, failures={})

    result = await fake.cli().down("node-1", purge=True)

    assert not result.already_gone
    assert fake.calls()[0]["argv"] == ["down", "-y", "--purge", "--", "node-1"]
    assert list(fake.clusters()) == ["node-2"]


async def test_down_that_races_a_vanishing_cluster_is_already_gone(fake: Fake) -> None:
    failure = {"error": "ClusterDoesNotExist", "message": "Cluster 'node-1' does not exist."}
    fake.script(clusters={"node-1": {"status": "UP"}}, failures={"down": failure})

    assert (await fake.cli().down("node-1")).already_gone


async def test_down_failure_reported_with_exit_zero_still_raises(fake: Fake) -> None:
    failure = {"report": "sky.exceptions.CloudError: the cloud said no"}
    fake.script(clusters={"node-1": {"status": "UP"}}, failures={"down": failure})

    with pytest.raises(RequestFailedError) as caught:
        await fake.cli().down("node-1")

    assert caught.value.error_type == "CloudError"
    assert caught.value.message == "the cloud said no."
    assert not caught.value.retryable


async def test_down_failure_that_is_not_not_found_raises(fake: Fake) -> None:
    failure = {"error": "ClusterOwnerIdentityMismatchError", "message": "not yours"}
    fake.script(clusters={"node-1": {"status": "UP"}}, failures={"down": failure})

    with pytest.raises(RequestFailedError) as caught:
        await fake.cli().down("node-1")

    assert caught.value.error_type == "ClusterOwnerIdentityMismatchError"
    assert not caught.value.not_found


async def test_stop_of_a_missing_cluster_is_not_found(fake: Fake) -> None:
    with pytest.raises(RequestFailedError) as caught:
        await fake.cli().stop("gone-1")

    assert caught.value.error_type == "ClusterDoesNotExist"
    assert caught.value.not_found
    assert fake.calls()[0]["argv"] == ["stop", "-y", "--", "gone-1"]


async def test_stop_of_an_existing_cluster(fake: Fake) -> None:
    fake.script(clusters={"node-1": {"status": "UP"}}, failures={})
    cli = fake.cli()

    await cli.stop("node-1")

    assert await cli.cluster_status("node-1") is ClusterStatus.STOPPED


# --- status -------------------------------------------------------------------------------


async def test_status_of_all_clusters(fake: Fake) -> None:
    fake.script(
        clusters={
            "a-1": {"status": "UP"},
            "b-1": {"status": "ClusterStatus.STOPPED"},
            "c-1": {"status": "SOMETHING_NEW"},
        },
        failures={},
    )

    records = await fake.cli().status()

    assert {r.name: r.status for r in records} == {
        "a-1": ClusterStatus.UP,
        "b-1": ClusterStatus.STOPPED,
        "c-1": ClusterStatus.UNKNOWN,
    }
    assert records[0].cloud == "Kubernetes"
    assert fake.calls()[0]["argv"][:4] == ["status", "-o", "json", "--all-users"]


async def test_status_of_named_clusters_skips_the_not_found_line(fake: Fake) -> None:
    fake.script(clusters={"a-1": {"status": "INIT"}, "b-1": {"status": "UP"}}, failures={})
    cli = fake.cli()

    records = await cli.status(["a-1", "missing-1"])

    assert [(r.name, r.status) for r in records] == [("a-1", ClusterStatus.INIT)]
    assert fake.calls()[0]["argv"] == ["status", "-o", "json", "--", "a-1", "missing-1"]
    assert await cli.cluster_status("missing-1") is ClusterStatus.TERMINATED
    assert await cli.cluster_status("b-1") is ClusterStatus.UP


async def test_status_after_the_cli_started_a_local_server(fake: Fake) -> None:
    stdout = (  # observed on the first call in a fresh HOME
        "\x1b[2mFailed to connect to SkyPilot API server at http://127.0.0.1:46580. Starting a "
        "local server.\x1b[0m\n\x1b[0m\x1b[32m✓ SkyPilot API server started. \x1b[0m\x1b[0m\n[]\n"
    )
    fake.script(clusters={}, failures={"status": {"stdout": stdout, "exit_code": 0}})

    assert await fake.cli().status() == []


async def test_status_without_json_is_a_command_error(fake: Fake) -> None:
    fake.script(clusters={}, failures={"status": {"stdout": "nothing useful\n", "exit_code": 0}})

    with pytest.raises(CommandError, match="nothing useful"):
        await fake.cli().status()


async def test_unreachable_api_server_is_retryable(fake: Fake) -> None:
    message = (
        "Could not connect to SkyPilot API server at http://127.0.0.2:9. Please ensure that the "
        "server is running. Try: curl http://127.0.0.2:9/api/health"
    )
    fake.script(
        clusters={}, failures={"status": {"error": "ApiServerConnectionError", "message": message}}
    )

    with pytest.raises(ServerUnreachableError) as caught:
        await fake.cli().cluster_status("node-1")

    assert caught.value.retryable
    assert "127.0.0.2:9" in caught.value.message


# --- classification of observed outputs (no subprocess) -----------------------------------


@pytest.mark.parametrize(
    ("stderr", "error_class", "error_type", "retryable", "not_found"),
    [
        (f"sky.exceptions.NoCloudAccessError: {NO_CLOUD}\n", RequestFailedError,
         "NoCloudAccessError", False, False),
        (f"sky.exceptions.ResourcesUnavailableError: {NO_CAPACITY}\n", RequestFailedError,
         "ResourcesUnavailableError", True, False),
        ("sky.exceptions.ClusterNotUpError: Cluster 'x' not found.\n", RequestFailedError,
         "ClusterNotUpError", False, True),
        ("sky.exceptions.InvalidClusterNameError: Cluster name 'X_!' is invalid\n",
         RequestFailedError, "InvalidClusterNameError", False, False),
        ("ValueError: Workspace nows does not exist. Use `sky check` to see if it is defined on "
         "the API server and try again.\n", RequestFailedError, "ValueError", False, False),
        ("Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
         "    raise e\nsky.exceptions.ResourcesUnavailableError: no capacity\n",
         RequestFailedError, "ResourcesUnavailableError", True, False),
        ("ConnectionRefusedError: [Errno 111] Connection refused\n\nThe above exception was the "
         "direct cause of the following exception:\n\nrequests.exceptions.ConnectionError: "
         "HTTPConnectionPool(host='127.0.0.1', port=46580): Max retries exceeded\n",
         ServerUnreachableError, "ConnectionError", True, False),
        ("sky.exceptions.ServerTemporarilyUnavailableError: draining\n", APIError, None, True,
         False),
    ],
    ids=["no-cloud", "capacity", "not-up", "bad-name", "value-error", "traceback",
         "refused", "draining"],
)  # fmt: skip
def test_observed_failures_map_onto_the_taxonomy(
    stderr: str,
    error_class: type[SkyPilotError],
    error_type: str | None,
    retryable: bool,
    not_found: bool,
) -> None:
    error = error_from_output("sky.launch", Completed(1, "YAML to run: t.yaml\n", stderr))

    assert type(error) is error_class
    assert error.error_type == error_type
    assert error.retryable is retryable
    assert error.not_found is not_found
    assert error.operation == "sky.launch"


def test_click_usage_error_is_an_unclassified_command_error() -> None:
    stderr = (
        "Usage: sky launch [OPTIONS] [ENTRYPOINT]...\nTry 'sky launch -h' for help.\n\n"
        "Error: Dotenv file does not exist: missing.env. Provide a path to an existing file, "
        "or remove the flag.\n"
    )

    error = error_from_output("sky.launch", Completed(2, "", stderr))

    assert type(error) is CommandError
    assert error.error_type is None
    assert "exited with code 2" in error.message
    assert "Dotenv file does not exist" in error.message


def test_the_json_list_is_found_after_log_lines_that_look_like_json() -> None:
    result = json.dumps([{"name": "a", "owner": ["u"]}], indent=2)
    stdout = f"[1] launching\nCluster(s) not found: x.\n{result}\n"

    assert find_json_list(stdout) == [{"name": "a", "owner": ["u"]}]
    assert find_json_list("no json here\n") is None


# --- what the child is given: allow-listed environment, anonymous files -------------------

ENDPOINT = "http://127.0.0.1:9"
TOKEN = "sky_token-ServiceAccount-0123456789abcdef"
WORKER_SECRETS = {  # the worker's configuration, as it sits in the worker's environment
    "SKYPILOT_CREDENTIAL_ENCRYPTION_KEY": "a2V5LWVuY3J5cHRpb24tc2VjcmV0LTAxMjM0NTY3ODk=",
    "SKYPILOT_CREDENTIAL_PREVIOUS_KEYS": "cHJldmlvdXMta2V5LXNlY3JldC0wMTIzNDU2Nzg5YWI=",
    "SKYPILOT_SERVICE_ACCOUNT_TOKEN": TOKEN,
    "R2_ACCESS_KEY_ID": "r2-access-key-id-secret-0123",
    "R2_SECRET_ACCESS_KEY": "r2-secret-access-key-secret-0123456789",
    "DATABASE_URL": "postgresql://cp:db-password-secret-0123@127.0.0.1/cp",
    "TEMPORAL_PAYLOAD_ENCRYPTION_KEY": "cGF5bG9hZC1rZXktc2VjcmV0LTAxMjM0NTY3ODlhYmM=",
    "TEMPORAL_API_KEY": "temporal-api-key-secret-0123456789",
    "CODEC_SERVER_TOKEN": "codec-server-token-secret-0123456789",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-access-key-secret-0123456789",
    "SKYPILOT_SOMETHING_ELSE": "another-skypilot-variable-secret-0123",
}


def secret_values() -> list[str]:
    return [*WORKER_SECRETS.values(), "db-password-secret-0123"]


def server_cli(fake: Fake, **env: str) -> SkyCLI:
    return SkyCLI(
        str(fake.sky),
        launch_timeout=20,
        terminate_timeout=20,
        status_timeout=20,
        server=ServerAccess(ENDPOINT, SecretStr(TOKEN)),
        identity={"SKYPILOT_USER_ID": "c0a7b1e5", "SKYPILOT_USER": "controlplane"},
        env={"FAKE_SKY_STATE": str(fake.state), "FAKE_SKY_LOG": str(fake.log), **env},
        kill_grace=0.3,
    )


async def test_the_child_gets_an_allow_listed_environment_and_none_of_the_workers_secrets(
    fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in WORKER_SECRETS.items():
        monkeypatch.setenv(key, value)
    cli = server_cli(fake)

    await cli.launch("node-1", make_task(), marker="controlplane launch node-1 key=n1")
    await cli.status(["node-1"])
    await cli.down("node-1")

    assert len(fake.calls()) == 3
    for call in fake.calls():
        env = call["env"]
        assert not set(env) & set(WORKER_SECRETS)
        assert {k for k in env if k.startswith("SKYPILOT_")} <= {
            "SKYPILOT_USER_ID",
            "SKYPILOT_USER",
            "SKYPILOT_DISABLE_USAGE_COLLECTION",
            "SKYPILOT_GLOBAL_CONFIG",
        }
        assert env["SKYPILOT_USER_ID"] == "c0a7b1e5"
        assert_no_secret(json.dumps(env), secret_values())
        assert_no_secret(json.dumps(call["argv"]), secret_values())
        # The endpoint and the token reach the CLI only in its anonymous config file.
        config = call["config_file"]
        assert env["SKYPILOT_GLOBAL_CONFIG"] == config["path"]
        assert config["path"].startswith("/dev/fd/")
        assert config["nlink"] == 0
        assert f"endpoint: {ENDPOINT}" in config["text"]
        assert f"service_account_token: {TOKEN}" in config["text"]
        assert_no_secret(config["text"], [v for v in secret_values() if v != TOKEN])
        assert ENDPOINT not in json.dumps(env)


async def test_without_a_server_configured_the_cli_gets_no_config_file(fake: Fake) -> None:
    await fake.cli().status()

    (call,) = fake.calls()
    assert "SKYPILOT_GLOBAL_CONFIG" not in call["env"]
    assert call["config_file"] is None


def test_server_access_takes_the_old_endpoint_variable_only_as_a_fallback() -> None:
    environ = {"SKYPILOT_API_SERVER_ENDPOINT": "http://old:1"}

    assert ServerAccess.from_environment(None, None, environ).endpoint == "http://old:1"
    assert ServerAccess.from_environment("http://new:2", None, environ).endpoint == "http://new:2"
    with pytest.raises(ValueError, match="http"):
        ServerAccess("ftp://x")


RUNNER = """
import asyncio, json, sys
from pydantic import SecretStr
from controlplane.skypilot.cli import SkyCLI
from controlplane.skypilot.task import SkyTask

sky, state, log = sys.argv[1:4]
task = SkyTask(name="node-1", document={"name": "node-1", "run": "echo hi"},
               secrets={"HF_TOKEN": SecretStr(sys.stdin.readline().strip())})
cli = SkyCLI(sky, launch_timeout=60, terminate_timeout=60, status_timeout=60,
             env={"FAKE_SKY_STATE": state, "FAKE_SKY_LOG": log, "FAKE_SKY_SLEEP": "60"})
asyncio.run(cli.launch("node-1", task))
"""


async def test_a_sigkilled_worker_leaves_no_file_with_the_secrets(
    fake: Fake, tmp_path: Path
) -> None:
    """SIGKILL the launching process mid-launch: nothing on disk may hold the secret after."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-c", RUNNER, str(fake.sky), str(fake.state), str(fake.log),
        stdin=asyncio.subprocess.PIPE,
        env={**os.environ, "TMPDIR": str(scratch)},
        cwd=REPO,
    )  # fmt: skip
    assert worker.stdin is not None
    worker.stdin.write(f"{HF_TOKEN}\n".encode())
    await worker.stdin.drain()
    call = await wait_for_call(fake)
    try:
        worker.kill()
        await worker.wait()
        assert call["secret_file"]["nlink"] == 0
        leftovers = [p for p in scratch.rglob("*") if p.is_file()]
        holding = [p for p in leftovers if HF_TOKEN in p.read_text(errors="replace")]
        assert holding == [], f"secret files left after SIGKILL: {holding}"
        assert leftovers == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(call["pgid"], signal.SIGKILL)


# --- one launch request per node: lookup, reattach, cancel -----------------------------------


def launch_request(fake: Fake, status: str, **extra: Any) -> str:
    state = json.loads(fake.state.read_text(encoding="utf-8"))
    request_id = f"{len(state.get('requests', [])) + 1:08d}-aaaa-4000-8000-000000000000"
    state.setdefault("requests", []).append(
        {
            "request_id": request_id,
            "name": "sky.launch",
            "user_id": "c0a7b1e5",
            "status": status,
            "created_at": time.time(),
            "cluster_name": "node-1",
            **extra,
        }
    )
    fake.state.write_text(json.dumps(state), encoding="utf-8")
    return request_id


async def test_a_retried_cli_launch_waits_for_a_late_commit_before_it_sends(fake: Fake) -> None:
    """An earlier attempt's `sky launch` was committed late (its worker died first): the retry's
    first `sky api status` misses it, so it looks again until the commit horizon, then
    reattaches instead of sending a second launch."""
    loop = asyncio.get_running_loop()
    loop.call_later(0.5, launch_request, fake, "RUNNING")

    await CliBackend(fake.cli(), poll_interval=0.2, commit_horizon=10).launch(
        "node-1",
        make_task(),
        idempotency_key="node-id-1",
        workspace=None,
        earlier_may_have_sent=True,
    )

    assert "launch" not in verbs(fake)
    assert verbs(fake)[-1] == "api logs"


async def test_a_first_cli_launch_does_not_wait_out_the_horizon(fake: Fake) -> None:
    await CliBackend(fake.cli(), commit_horizon=600).launch(
        "node-1", make_task(), idempotency_key="node-id-1", workspace=None
    )
    assert verbs(fake) == ["api status", "launch"]


def verbs(fake: Fake) -> list[str]:
    return [
        " ".join(c["argv"][:2]) if c["argv"][0] == "api" else c["argv"][0] for c in fake.calls()
    ]


async def test_a_cli_launch_carries_the_rest_clients_marker(fake: Fake) -> None:
    await CliBackend(fake.cli()).launch(
        "node-1", make_task(), idempotency_key="node-id-1", workspace=None
    )

    launch = fake.calls()[-1]["argv"]
    assert verbs(fake) == ["api status", "launch"]
    marker = "controlplane launch node-1 key=node-id-1"
    assert launch[launch.index("--env") + 1] == f"CONTROLPLANE_LAUNCH_MARKER={marker}"


async def test_a_retried_cli_launch_reattaches_to_the_live_request(fake: Fake) -> None:
    request_id = launch_request(fake, "RUNNING")  # the first attempt's, its worker died

    await CliBackend(fake.cli()).launch(
        "node-1", make_task(), idempotency_key="node-id-1", workspace=None
    )

    assert verbs(fake) == ["api status", "api logs"]
    assert fake.calls()[1]["argv"] == ["api", "logs", "--", request_id]
    assert fake.calls()[0]["argv"] == [
        "api", "status", "-a", "-v", "-l", "none", "-o", "json", "-c", "node-1",
    ]  # fmt: skip
    assert fake.clusters()["node-1"]["status"] == "UP"


async def test_a_retry_after_a_failed_launch_sends_a_new_one(fake: Fake) -> None:
    launch_request(fake, "RUNNING")
    state = json.loads(fake.state.read_text(encoding="utf-8"))
    state["requests"][0]["status"] = "FAILED"
    state["requests"][0]["error"] = {"error": "ResourcesUnavailableError", "message": "none"}
    state["requests"].append({**state["requests"][0], "status": "RUNNING", "created_at": 1.0})
    fake.state.write_text(json.dumps(state), encoding="utf-8")

    # The newest request failed: a retry launches again rather than reattaching to it.
    await CliBackend(fake.cli()).launch("node-1", make_task(), idempotency_key="k", workspace=None)

    assert verbs(fake) == ["api status", "launch"]


async def test_a_succeeded_launch_is_reattached_only_while_its_cluster_exists(fake: Fake) -> None:
    launch_request(fake, "SUCCEEDED")
    fake.script(clusters={"node-1": {"status": "UP"}}, failures={}, requests=json.loads(
        fake.state.read_text(encoding="utf-8"))["requests"])  # fmt: skip
    backend = CliBackend(fake.cli())

    await backend.launch("node-1", make_task(), idempotency_key="k", workspace=None)
    assert verbs(fake) == ["api status", "status"]  # done already: no second launch

    await backend.terminate("node-1", timeout=5)
    await backend.launch("node-1", make_task(), idempotency_key="k", workspace=None)
    assert verbs(fake)[-3:] == ["api status", "status", "launch"]  # its cluster is gone


async def test_cli_cancel_launches_cancels_the_live_requests_by_id(fake: Fake) -> None:
    backend = CliBackend(fake.cli())
    assert await backend.cancel_launches("node-1") == []
    assert verbs(fake) == ["api status"]  # nothing live: no `sky api cancel` at all

    launch_request(fake, "SUCCEEDED")
    live = launch_request(fake, "RUNNING")

    assert await backend.cancel_launches("node-1") == [live]
    assert fake.calls()[-1]["argv"] == ["api", "cancel", "--", live]
    assert json.loads(fake.state.read_text(encoding="utf-8"))["requests"][1]["status"] == (
        "CANCELLED"
    )


async def test_cancel_refuses_an_empty_id_list_and_odd_ids(fake: Fake) -> None:
    cli = fake.cli()
    with pytest.raises(ValueError, match="empty list would cancel all"):
        await cli.cancel([], subject="node-1")
    with pytest.raises(ValueError, match="invalid request id"):
        await cli.cancel(["--all"], subject="node-1")
    assert fake.calls() == []


async def test_a_cli_launch_deadline_is_a_wait_timeout_as_in_api_mode(fake: Fake) -> None:
    fake.script(clusters={"node-1": {"status": "INIT"}}, failures={})

    with pytest.raises(WaitTimeoutError, match="still INIT"):
        await CliBackend(fake.cli(), poll_interval=0.1).wait_launched("node-1", None, 0.3)


@pytest.mark.parametrize("mode", [LaunchMode.API, LaunchMode.CLI])
async def test_a_launch_deadline_is_a_launch_timeout_in_both_modes(
    fake: Fake, mode: LaunchMode
) -> None:
    """The same-shaped failure, the same error type: SkyPilot not done by the deadline."""
    fake.script(clusters={"node-1": {"status": "INIT"}}, failures={})  # never comes up
    simulator = SimulatorServer(SimConfig(port=0, launch_delay_s=600.0))
    simulator.start()
    try:
        async with SkyPilotClient(simulator.url) as client, httpx.AsyncClient() as probe:
            request_id = None
            if mode is LaunchMode.API:  # a launch that is still running at the deadline
                request_id = await client.launch("node-1", make_task({}))
            backends: dict[LaunchMode, SkyPilotBackend] = {
                LaunchMode.API: ApiBackend(client),
                LaunchMode.CLI: CliBackend(fake.cli(), poll_interval=0.1),
            }
            activities = SkyPilotActivities(
                backends, None, TaskSettings("http://cp", "0.11.0", "2.8.0"), probe
            )
            wait = WaitReadyInput(
                cluster_name="node-1", launch_mode=mode, request_id=request_id, timeout_s=1.0
            )
            with pytest.raises(ApplicationError) as caught:
                await ActivityEnvironment().run(activities.wait_ready, wait)
    finally:
        simulator.stop()

    assert caught.value.type == "LaunchTimeout"
    assert caught.value.non_retryable
    assert "SKYPILOT_LAUNCH_TIMEOUT" in caught.value.message
