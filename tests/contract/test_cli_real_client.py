"""The real skypilot 0.14.1 `sky` CLI, driven by the project's runner, against a recording server.

The real client copies every ``SKYPILOT_*`` variable of its environment into the ``env_vars`` of
each request body, which an API server stores and shows on ``/api/status`` (issue 8, finding 1).
These tests put the worker's whole configuration, secrets included, in the environment the
runner is called from, run launch, status, down, ``sky api status``, ``sky api logs`` and
``sky api cancel`` through the runner, and look for every secret in everything that arrived.
They also check, against the real client, the shapes the runner relies on for exactly-once
launches in CLI mode (issue 10, path 4): the marker in ``entrypoint_command``, reattach
without a second POST /launch, and cancel by explicit id.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from controlplane.config import load_settings
from controlplane.skypilot.backend import CliBackend
from controlplane.skypilot.errors import RequestFailedError
from controlplane.skypilot.task import SkyTask, TaskSettings, build_task
from controlplane.spec import NodeSpec
from tests.support.real_skypilot import skypilot_venv
from tests.support.recording_sky_server import Recorded, RecordingSkyServer
from tests.support.specs import node_spec as spec_of
from worker import cli_runner

TOKEN = "sky_eyJhbGciOiJIUzI1NiJ9.service-account-token-secret.0123456789"
HF_TOKEN = "hf_tenant-secret-0123456789abcdef"
DB_PASSWORD = "db-password-secret-0123456789"


def b64key(fill: bytes) -> str:
    return base64.b64encode(fill * 32).decode()


WORKER_ENV = {  # the worker's full configuration; every value below is a secret
    "SKYPILOT_CREDENTIAL_ENCRYPTION_KEY": b64key(b"E"),
    "SKYPILOT_CREDENTIAL_PREVIOUS_KEYS": f"{b64key(b'P')},{b64key(b'Q')}",
    "SKYPILOT_SERVICE_ACCOUNT_TOKEN": TOKEN,
    "R2_ACCESS_KEY_ID": "r2-access-key-id-secret-0123",
    "R2_SECRET_ACCESS_KEY": "r2-secret-access-key-secret-0123456789",
    "DATABASE_URL": f"postgresql://cp:{DB_PASSWORD}@127.0.0.1:5432/cp",
    "TEMPORAL_PAYLOAD_ENCRYPTION_KEY": b64key(b"T"),
    "TEMPORAL_PAYLOAD_PREVIOUS_KEYS": b64key(b"U"),
    "TEMPORAL_API_KEY": "temporal-api-key-secret-0123456789",
    "CODEC_SERVER_TOKEN": "codec-server-token-secret-0123456789",
}
SECRETS = [v for k, v in WORKER_ENV.items() if k != "DATABASE_URL"] + [DB_PASSWORD]
SECRETS += [key for value in WORKER_ENV.values() for key in value.split(",") if "," in value]
# What the real client may legitimately put in env_vars once it is given nothing of ours.
CLIENT_ENV_VARS = {
    "SKYPILOT_USER_ID",
    "SKYPILOT_USER",
    "SKYPILOT_USAGE_RUN_ID",
    "SKYPILOT_DISABLE_USAGE_COLLECTION",
}


@pytest.fixture
def recorder() -> Iterator[RecordingSkyServer]:
    sky = skypilot_venv() / "bin" / "sky"
    if not sky.exists():
        pytest.fail(f"no skypilot 0.14.1 `sky` at {sky}: run scripts/test, which installs it")
    server = RecordingSkyServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def backend(
    recorder: RecordingSkyServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> CliBackend:
    home = tmp_path / "home"
    home.mkdir()
    for key, value in WORKER_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SKYPILOT_API_SERVER_URL", recorder.url)
    monkeypatch.setenv("SKYPILOT_CLI_PATH", str(skypilot_venv() / "bin" / "sky"))
    monkeypatch.setenv("SKYPILOT_LAUNCH_TIMEOUT", "2m")
    return CliBackend(cli_runner(load_settings()), poll_interval=0.2)


def node_spec() -> NodeSpec:
    return spec_of(model="org/model")


def tenant_task(spec: NodeSpec) -> SkyTask:
    """The node's task with a tenant secret, and without the platform's R2 keys: those belong in a
    launch's ``secrets:``, and this test looks for them everywhere else."""
    settings = TaskSettings(control_plane_url="http://cp.invalid", vllm_version="0.11.0",
                            torch_version="2.8.0")  # fmt: skip
    return build_task(spec, settings, node_secrets={"HF_TOKEN": SecretStr(HF_TOKEN)})


def assert_nothing_of_ours(requests: list[Recorded]) -> None:
    assert requests, "the real CLI sent nothing"
    for request in requests:
        body = request.body.decode(errors="replace")
        query = json.dumps(request.query)
        headers = {k.lower(): v for k, v in request.headers.items()}
        for secret in SECRETS:
            assert secret not in body, f"{request.method} {request.path} body holds a secret"
            assert secret not in query, f"{request.method} {request.path} query holds a secret"
            for name, value in headers.items():
                if secret == TOKEN and name == "authorization":
                    continue
                assert secret not in value, f"header {name} of {request.path} holds a secret"
        # The token travels only as the bearer header, which proves the CLI got it at all.
        assert headers.get("authorization") == f"Bearer {TOKEN}", request.path
        payload = request.json() if request.method == "POST" else None
        if isinstance(payload, dict):
            env_vars = payload.get("env_vars") or {}
            assert set(env_vars) <= CLIENT_ENV_VARS, sorted(set(env_vars) - CLIENT_ENV_VARS)
            assert env_vars["SKYPILOT_USER_ID"] == "c0a7b1e5"  # our identity, as API mode's
            assert HF_TOKEN not in json.dumps(env_vars)
            assert HF_TOKEN not in str(payload.get("entrypoint_command"))


async def test_the_real_cli_sends_no_secret_of_the_worker(
    recorder: RecordingSkyServer, backend: CliBackend
) -> None:
    spec = node_spec()
    task = tenant_task(spec)

    with pytest.raises(RequestFailedError) as caught:  # the recorder has no cloud, as CI
        await backend.launch(spec.cluster_name, task, idempotency_key=spec.node_id, workspace=None)
    assert caught.value.error_type == "NoCloudAccessError"
    await backend.cluster_status(spec.cluster_name)
    await backend.terminate(spec.cluster_name, timeout=60)
    await backend.cancel_launches(spec.cluster_name)

    assert_nothing_of_ours(recorder.requests)
    paths = {(r.method, r.path) for r in recorder.requests}
    # `sky down` of a cluster the server does not list stops after its POST /status lookup.
    assert {("POST", "/launch"), ("POST", "/status"), ("GET", "/api/status")} <= paths
    (launch,) = recorder.posts("/launch")
    body = launch.json()
    marker = f"controlplane launch {spec.cluster_name} key={spec.node_id}"
    assert marker in body["entrypoint_command"]  # the REST client's marker, via argv
    assert HF_TOKEN in body["task"]  # the tenant's secret goes where it must: the task


async def test_the_real_cli_reattaches_instead_of_launching_twice(
    recorder: RecordingSkyServer, backend: CliBackend
) -> None:
    spec = node_spec()
    earlier = recorder.add_request("sky.launch", spec.cluster_name)  # a killed worker's launch
    recorder.finish_when_followed.add(earlier)

    await backend.launch(
        spec.cluster_name, tenant_task(spec), idempotency_key=spec.node_id, workspace=None
    )

    assert recorder.posts("/launch") == []
    streamed = [r for r in recorder.requests if r.path == "/api/stream"]
    assert [r.query["request_id"] for r in streamed] == [[earlier]]
    assert_nothing_of_ours(recorder.requests)


async def test_the_real_cli_cancels_a_live_launch_by_its_id(
    recorder: RecordingSkyServer, backend: CliBackend
) -> None:
    spec = node_spec()
    live = recorder.add_request("sky.launch", spec.cluster_name)
    recorder.add_request("sky.launch", "someone-elses-cluster")

    assert await backend.cancel_launches(spec.cluster_name) == [live]

    (cancel,) = recorder.posts("/api/cancel")
    assert cancel.json()["request_ids"] == [live]
    assert recorder.store[live].status == "CANCELLED"
    assert_nothing_of_ours(recorder.requests)
