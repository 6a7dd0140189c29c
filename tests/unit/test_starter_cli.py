"""`python -m starter` without a server: GPU parsing, field-naming errors and the exit codes.

Bad input must be refused (exit 2, a JSON error on stderr naming the option or field) before
anything connects to Temporal; an unreachable Temporal with a valid spec is exit 5 with a hint.
The happy exit codes are checked against a stand-in ControlPlane, so no server is needed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from _pytest.capture import CaptureResult
from pydantic import ValidationError

import starter.__main__ as cli
from controlplane.lifecycle import NodeStatus
from controlplane.spec import NodeSpec
from starter.api import NotFound
from tests.support.specs import BASE
from workflows.models import NodeView, NodeWorkflowInput, TerminateNodeResponse

REPO = Path(__file__).resolve().parents[2]
NODE = [
    "--tenant",
    "acme",
    "--model",
    "NousResearch/Meta-Llama-3-8B-Instruct",
    "--provider",
    "aws",
    "--region",
    "us-east-1",
]


def launch_args(*extra: str, gpu: str = "A100:1") -> list[str]:
    return ["launch", *NODE, "--gpu", gpu, *extra]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, read, released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> str:
    """The process environment without the stack's settings, Temporal on a closed port."""
    for name in list(os.environ):
        if name.startswith(("SKYPILOT_", "TEMPORAL_", "R2_", "NODE_")) or name in (
            "DATABASE_URL",
            "LOG_LEVEL",
        ):
            monkeypatch.delenv(name, raising=False)
    address = f"127.0.0.1:{closed_port()}"
    monkeypatch.setenv("TEMPORAL_ADDRESS", address)
    return address


@pytest.fixture
def no_connect(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Record any attempt to connect; input errors must never get that far."""
    calls: list[object] = []

    async def refuse(settings: object, **_: object) -> None:
        calls.append(settings)
        raise AssertionError("connect() was called for bad input")

    monkeypatch.setattr(cli, "connect", refuse)
    return calls


def stderr_error(captured: CaptureResult[str]) -> dict[str, Any]:
    """The one JSON line `fail()` writes to stderr; stdout stays empty on errors."""
    assert captured.out == ""
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    payload = json.loads(lines[0])
    assert isinstance(payload, dict)
    assert isinstance(payload.get("error"), str)
    return payload


# --- parse_gpu ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A100", ("A100", 1)),
        ("A100:1", ("A100", 1)),
        ("H100:8", ("H100", 8)),
        ("  L4:2  ", ("L4", 2)),
        ("A100-80GB:4", ("A100-80GB", 4)),
        ("a10g:16", ("a10g", 16)),
        ("A100:01", ("A100", 1)),
    ],
)
def test_parse_gpu_accepts_type_and_count(text: str, expected: tuple[str, int]) -> None:
    assert cli.parse_gpu(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "A100:x",
        "A100:",
        ":1",
        "",
        "A100:1:2",
        "A 100:1",
        "A100:1.5",
        "A100:-1",
        "-A100:1",
        "A100;1",
    ],
)
def test_parse_gpu_rejects_malformed_strings_naming_the_option(text: str) -> None:
    with pytest.raises(cli.InputError) as raised:
        cli.parse_gpu(text)
    message = str(raised.value)
    assert message.startswith("--gpu ")
    assert repr(text) in message
    assert "TYPE:COUNT" in message


@pytest.mark.parametrize("text", ["A100:0", "A100:00"])
def test_parse_gpu_rejects_a_zero_count(text: str) -> None:
    with pytest.raises(cli.InputError, match=r"--gpu .*at least 1"):
        cli.parse_gpu(text)


# --- validation_message -------------------------------------------------------------------------
def _validation_error(**fields: Any) -> ValidationError:
    base: dict[str, Any] = {**BASE, **fields}
    for name in [key for key, value in base.items() if value is None]:
        del base[name]
    with pytest.raises(ValidationError) as raised:
        NodeSpec.model_validate(base)
    return raised.value


def test_validation_message_names_every_bad_field() -> None:
    message = cli.validation_message(_validation_error(provider="moon", gpu_count=0))
    assert message.startswith("provider: unknown provider 'moon'; expected one of: aws, "), message
    assert message.endswith("; gpu_count: Input should be greater than or equal to 1"), message
    assert "Value error" not in message  # pydantic's prefix is dropped


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"tenant": "bad tenant!"}, "tenant"),
        ({"model": "../../etc/passwd"}, "model"),
        ({"region": "US EAST"}, "region"),
        ({"gpu_type": "A100:1"}, "gpu_type"),
        ({"gpu_count": -1}, "gpu_count"),
        ({"gpu_count": 17}, "gpu_count"),
        ({"model": None}, "model"),
    ],
)
def test_validation_message_starts_with_the_field(fields: dict[str, Any], field: str) -> None:
    message = cli.validation_message(_validation_error(**fields))
    assert message.startswith(f"{field}: "), message
    if fields.get(field, "") is None:
        assert message == f"{field}: Field required"


def test_validation_message_uses_dotted_paths_for_nested_fields() -> None:
    with pytest.raises(ValidationError) as raised:
        NodeWorkflowInput.model_validate({"spec": {"tenant": "acme", "gpu_count": 0}})
    message = cli.validation_message(raised.value)
    assert "spec.gpu_count: " in message
    assert "spec.model: Field required" in message
    assert "spec.provider: Field required" in message


# --- exit codes: bad input is refused before connecting ----------------------------------------
BAD_LAUNCHES = [
    pytest.param(launch_args(gpu="A100:x"), "--gpu", id="gpu-not-a-number"),
    pytest.param(launch_args(gpu="A100:0"), "--gpu", id="gpu-count-zero"),
    pytest.param(launch_args(gpu="A100:-1"), "--gpu", id="gpu-count-negative"),
    pytest.param(launch_args(gpu="A100:17"), "gpu_count", id="gpu-count-too-large"),
    pytest.param(
        ["launch", *NODE[:4], "--provider", "moon", *NODE[6:], "--gpu", "A100:1"],
        "provider",
        id="unknown-provider",
    ),
    pytest.param(
        ["launch", "--tenant", "bad tenant!", *NODE[2:], "--gpu", "A100:1"],
        "tenant",
        id="bad-tenant",
    ),
    pytest.param(
        ["launch", *NODE[:2], "--model", "../../etc/passwd", *NODE[4:], "--gpu", "A100:1"],
        "model",
        id="bad-model",
    ),
    pytest.param(launch_args("--replica", str(10**15)), "replica", id="replica-too-large"),
    pytest.param(launch_args("--deployment", "Blue Team"), "deployment", id="bad-deployment"),
    pytest.param(
        ["deploy", *NODE, "--gpu", "A100:x", "--replicas", "2"], "--gpu", id="deploy-bad-gpu"
    ),
    pytest.param(
        ["deploy", *NODE, "--gpu", "A100:1", "--replicas", "2", "--name", "UPPER"],
        "name",
        id="deploy-bad-name",
    ),
]

# Values only the workflows' own models check: validated before connecting all the same.
BAD_OTHER_COMMANDS = [
    pytest.param(
        ["deploy", *NODE, "--gpu", "A100:1", "--replicas", "-1"],
        "replicas",
        id="deploy-negative-replicas",
    ),
    pytest.param(
        ["scale", "--workflow-id", "deployment-acme-blue", "--replicas", "101"],
        "replicas",
        id="scale-too-many-replicas",
    ),
    pytest.param(
        ["terminate", "--cluster", "not a cluster name!"],
        "cluster_name",
        id="terminate-bad-cluster-name",
    ),
    pytest.param(
        ["update", "--workflow-id", "deployment-acme-blue", "--model", "x", "--max-surge", "0"],
        "max_surge",
        id="update-no-surge",
    ),
    pytest.param(
        ["update", "--workflow-id", "deployment-acme-blue", "--model", "../etc"],
        "model",
        id="update-bad-model",
    ),
    pytest.param(
        ["update", "--workflow-id", "deployment-acme-blue", "--gpu", "H100:99"],
        "gpu_count",
        id="update-too-many-gpus",
    ),
]


@pytest.mark.parametrize(("argv", "field"), BAD_LAUNCHES + BAD_OTHER_COMMANDS)
def test_bad_input_exits_2_with_the_field_named_and_never_connects(
    argv: list[str],
    field: str,
    clean_env: str,
    no_connect: list[object],
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = cli.main(argv)
    captured = capsys.readouterr()
    assert no_connect == [], "bad input reached connect()"
    assert code == cli.EXIT_INPUT, captured.err
    payload = stderr_error(captured)
    assert field in payload["error"], payload


@pytest.mark.parametrize(("argv", "field"), BAD_LAUNCHES[:3] + BAD_LAUNCHES[4:6])
def test_bad_input_ignores_an_unreachable_temporal(
    argv: list[str], field: str, clean_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Input errors win over a closed TEMPORAL_ADDRESS: exit 2, not 5."""
    code = cli.main(argv)
    captured = capsys.readouterr()
    assert code == cli.EXIT_INPUT, captured.err
    payload = stderr_error(captured)
    assert field in payload["error"]
    assert "TEMPORAL_ADDRESS" not in payload["error"]


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["launch", *NODE[:2], *NODE[4:], "--gpu", "A100:1"], "--model"),
        (launch_args("--replica", "one"), "--replica"),
    ],
    ids=["missing-model", "replica-not-an-integer"],
)
def test_argparse_errors_are_json_too(
    argv: list[str],
    option: str,
    clean_env: str,
    no_connect: list[object],
    capsys: pytest.CaptureFixture[str],
) -> None:
    code: int | str | None
    try:
        code = cli.main(argv)
    except SystemExit as exited:  # argparse's own way out, if it ever takes it again
        code = exited.code
    captured = capsys.readouterr()
    assert code == cli.EXIT_INPUT
    assert no_connect == []
    assert option in captured.err
    payload = stderr_error(captured)
    assert option in payload["error"]


def test_configuration_error_exits_2_without_echoing_secrets(
    clean_env: str,
    no_connect: list[object],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret = "not-a-sky-token-5f2b9c1d7e3a"
    monkeypatch.setenv("SKYPILOT_SERVICE_ACCOUNT_TOKEN", secret)
    monkeypatch.setenv("SKYPILOT_LAUNCH_TIMEOUT", "forever")
    code = cli.main(launch_args())
    captured = capsys.readouterr()
    assert code == cli.EXIT_INPUT
    assert no_connect == []
    payload = stderr_error(captured)
    assert "SKYPILOT_LAUNCH_TIMEOUT" in payload["error"]
    assert "SKYPILOT_SERVICE_ACCOUNT_TOKEN" in payload["error"]
    assert secret not in captured.err


# --- exit code 5: a valid spec, Temporal unreachable ---------------------------------------------
def test_unreachable_temporal_exits_5_with_a_hint(
    clean_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    code = cli.main(launch_args())
    elapsed = time.monotonic() - started
    captured = capsys.readouterr()
    assert code == cli.EXIT_UNREACHABLE, captured.err
    payload = stderr_error(captured)
    assert f"TEMPORAL_ADDRESS={clean_env}" in payload["error"]
    assert payload.get("hint"), payload
    assert "scripts/demo" in payload["hint"]
    assert elapsed < 15, f"a refused connection took {elapsed:.1f}s"


@pytest.mark.parametrize(
    "argv",
    [["status", "--workflow-id", "node-x"], ["list", "--running"]],
    ids=["status", "list"],
)
def test_unreachable_temporal_exits_5_for_every_command(
    argv: list[str], clean_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == cli.EXIT_UNREACHABLE
    assert "hint" in stderr_error(capsys.readouterr())


# --- the other exit codes, against a stand-in ControlPlane ---------------------------------------
VIEW = NodeView(
    node_id="n-1",
    cluster_name="cpn-acme-x-abc123-0",
    status=NodeStatus.RUNNING,
    endpoint="http://127.0.0.1:1/x",
)


class FakeControlPlane:
    """Answers like ControlPlane; ``behaviour`` picks the outcome."""

    behaviour: dict[str, Any] = {}

    def __init__(self, client: object, task_queue: str, *, cluster_prefix: str = "cpn") -> None:
        self.task_queue = task_queue

    async def node_status(self, workflow_id: str) -> NodeView:
        if self.behaviour.get("missing"):
            raise NotFound(f"no workflow {workflow_id!r} in this namespace")
        return VIEW

    async def terminate_node(self, workflow_id: str) -> TerminateNodeResponse:
        return TerminateNodeResponse(
            node_id=VIEW.node_id,
            status=NodeStatus.TERMINATING,
            still_terminating=bool(self.behaviour.get("still_terminating")),
        )


@pytest.fixture
def fake_control(monkeypatch: pytest.MonkeyPatch, clean_env: str) -> type[FakeControlPlane]:
    async def fake_connect(settings: object, **_: object) -> object:
        return object()

    monkeypatch.setattr(cli, "connect", fake_connect)
    monkeypatch.setattr(cli, "ControlPlane", FakeControlPlane)
    monkeypatch.setattr(FakeControlPlane, "behaviour", {})
    return FakeControlPlane


def test_status_prints_json_on_stdout_and_exits_0(
    fake_control: type[FakeControlPlane], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["status", "--workflow-id", "node-x"]) == cli.EXIT_OK
    captured = capsys.readouterr()
    assert captured.err == ""
    assert json.loads(captured.out) == VIEW.model_dump(mode="json")


def test_unknown_workflow_exits_3_with_a_hint(
    fake_control: type[FakeControlPlane], capsys: pytest.CaptureFixture[str]
) -> None:
    fake_control.behaviour["missing"] = True
    assert cli.main(["status", "--workflow-id", "node-nope"]) == cli.EXIT_NOT_FOUND
    payload = stderr_error(capsys.readouterr())
    assert "node-nope" in payload["error"]
    assert "python -m starter list" in payload["hint"]


@pytest.mark.parametrize(("still", "code"), [(False, 0), (True, 4)])
def test_terminate_exit_code_follows_the_bounded_wait(
    still: bool, code: int, fake_control: type[FakeControlPlane], capsys: pytest.CaptureFixture[str]
) -> None:
    fake_control.behaviour["still_terminating"] = still
    assert cli.main(["terminate", "--workflow-id", "node-x"]) == code
    out = json.loads(capsys.readouterr().out)
    assert out["still_terminating"] is still


def test_exit_code_2_survives_the_real_process_exit(tmp_path: Path) -> None:
    """`python -m starter` leaves through os._exit: the code must still be 2, stderr JSON."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKYPILOT_", "TEMPORAL_"))}
    env["TEMPORAL_ADDRESS"] = f"127.0.0.1:{closed_port()}"
    done = subprocess.run(
        [sys.executable, "-m", "starter", *launch_args(gpu="A100:x")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    payload = json.loads(done.stderr.strip().splitlines()[-1])
    assert "--gpu" in payload["error"]
