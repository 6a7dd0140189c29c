"""The real skypilot 0.14.1 API server, in its own virtualenv and HOME, on loopback (contract §12).

The virtualenv is made by `scripts/test` (or `scripts/bootstrap --skypilot-server`); this module
only starts and stops the server, and issues service-account tokens on it. It never downloads
anything, and neither does the server: its HOME gets the minimal catalog of
tests/fixtures/skypilot_catalog (a node's task names aws and an A100, which the server would
otherwise fetch the catalog for).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from tests.support.ports import free_port_pair

REPO = Path(__file__).resolve().parents[2]
DEFAULT_VENV = REPO / ".cache" / "skypilot-0.14.1"
CATALOG = REPO / "tests" / "fixtures" / "skypilot_catalog"
# The server's default configuration trusts an authentication proxy's user header (SkyPilot's
# legacy "external proxy" default, sky/server/config.py); on loopback nothing else can set it.
# The tests use it to act as a user when they issue a service-account token.
AUTH_PROXY_HEADER = "X-Auth-Request-Email"
QUEUE_PORT_OFFSET = 50011 - 46580  # the server's queue manager binds the API port + this


class RealServerUnavailable(RuntimeError):
    """The real server's virtualenv is missing or the server did not come up."""


def skypilot_venv() -> Path:
    return Path(os.environ.get("SKYPILOT_SERVER_VENV", str(DEFAULT_VENV)))


class RealSkyPilotServer:
    """`sky api start --foreground` in a fresh HOME; stopped with `sky api stop` + a group kill."""

    def __init__(self, *, service_accounts: bool = True, startup_timeout: float = 90.0) -> None:
        self.venv = skypilot_venv()
        self.sky = self.venv / "bin" / "sky"
        if not self.sky.exists():
            raise RealServerUnavailable(
                f"no skypilot 0.14.1 virtualenv at {self.venv}; run scripts/test, which installs "
                "it, or set SKYPILOT_SERVER_VENV"
            )
        self.port = free_port_pair(QUEUE_PORT_OFFSET)
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = Path(tempfile.mkdtemp(prefix="skypilot-real-"))
        (self.workdir / "home").mkdir()
        shutil.copytree(CATALOG, self.workdir / "home" / ".sky" / "catalogs", dirs_exist_ok=True)
        self.log_path = self.workdir / "server.log"
        self.startup_timeout = startup_timeout
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SKYPILOT_")},
            "HOME": str(self.workdir / "home"),
            "SKYPILOT_DISABLE_USAGE_COLLECTION": "1",
            "SKYPILOT_API_SERVER_LOCAL_PORT": str(self.port),
        }
        self.service_accounts = service_accounts
        if service_accounts:
            # sky/skylet/constants.py ENV_VAR_ENABLE_SERVICE_ACCOUNTS: without it the server
            # answers every sky_... Bearer token 401 "Service account authentication disabled".
            self.env["ENABLE_SERVICE_ACCOUNTS"] = "true"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                [
                    str(self.sky),
                    "api",
                    "start",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--foreground",
                ],
                env=self.env,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/api/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.3)
        tail = self.log_path.read_text(errors="replace")[-2000:]
        self.stop()
        raise RealServerUnavailable(f"real SkyPilot server did not become healthy:\n{tail}")

    def stop(self) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            subprocess.run(
                [str(self.sky), "api", "stop"],
                env=self.env,
                cwd=self.workdir,
                capture_output=True,
                timeout=60,
                check=False,
            )
        # `sky api stop` leaves idle executor workers behind (contract §12): kill the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=10)
        self._proc = None
        shutil.rmtree(self.workdir, ignore_errors=True)


def issue_service_account_token(
    url: str, name: str, *, user: str = "admin@controlplane.test"
) -> str:
    """A service-account token the real server issues (POST /users/service-account-tokens, as
    the dashboard's "create service account" does), made by ``user`` through the trusted
    proxy header. The server must run with service accounts on. ``name``: letters, digits, _."""
    response = httpx.post(
        f"{url}/users/service-account-tokens",
        json={"token_name": name, "expires_in_days": 1},
        headers={AUTH_PROXY_HEADER: user},
        timeout=30,
    )
    response.raise_for_status()
    token = response.json()["token"]
    if not (isinstance(token, str) and token.startswith("sky_")):
        raise RealServerUnavailable("the server answered no sky_... service-account token")
    return token
