"""What a `sky` child process is given: an allow-listed environment and anonymous in-memory files.

The real 0.14.1 client copies every ``SKYPILOT_*`` variable of its environment into the
``env_vars`` of each request body, which the API server stores and shows on ``/api/status``
(sky/server/requests/payloads.py, ``request_body_env_vars``). So the child never inherits the
worker's environment: it gets the few variables below and nothing else. The endpoint and the
service-account token travel in a client config file instead (``api_server.endpoint`` and
``api_server.service_account_token``), a section the client drops before it sends its config
overlay (``get_override_skypilot_config_from_client``); ``SKYPILOT_GLOBAL_CONFIG``, which
points at it, is dropped from ``env_vars`` too.

Every file with a secret (that config, the ``--secret-file``) and the task YAML is a memfd:
it has no name in any file system, the child reads it as ``/dev/fd/N``, and it is gone once
the last descriptor closes, even after a SIGKILL of the worker.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import yaml
from pydantic import SecretStr

from controlplane.skypilot.errors import CommandError

# Inherited from the worker when set: where to find programs and the user's files, the
# locale, and what is needed to reach an API server through a proxy or a private CA.
INHERITED_ENV = (
    "PATH",
    "HOME",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
)
CONFIG_ENV = "SKYPILOT_GLOBAL_CONFIG"  # sky/skypilot_config.py: ENV_VAR_GLOBAL_CONFIG
ENDPOINT_ENV = "SKYPILOT_API_SERVER_ENDPOINT"  # read from the worker, never passed on


@dataclass(frozen=True)
class ServerAccess:
    """Where the CLI's API server is and the token it presents (both optional)."""

    endpoint: str | None = None
    token: SecretStr | None = None

    def __post_init__(self) -> None:
        if self.endpoint is not None and not self.endpoint.startswith(("http://", "https://")):
            raise ValueError("the SkyPilot API server endpoint must be an http:// or https:// URL")

    @classmethod
    def from_environment(
        cls, endpoint: str | None, token: SecretStr | None, environ: Mapping[str, str]
    ) -> ServerAccess:
        """The configured endpoint, else the one a CLI-mode worker was given the old way."""
        return cls(endpoint or environ.get(ENDPOINT_ENV) or None, token)

    def config_text(self) -> str | None:
        """The client config YAML, or None when there is nothing to configure."""
        section: dict[str, str] = {}
        if self.endpoint:
            section["endpoint"] = self.endpoint
        if self.token is not None:
            section["service_account_token"] = self.token.get_secret_value()
        return yaml.safe_dump({"api_server": section}) if section else None


def child_environment(
    identity: Mapping[str, str], extra: Mapping[str, str], environ: Mapping[str, str]
) -> dict[str, str]:
    """The whole environment of a `sky` child: allow-listed variables plus ours."""
    env = {key: environ[key] for key in INHERITED_ENV if key in environ}
    env.update(extra)
    env.update(identity)
    env["PYTHONUTF8"] = "1"  # the CLI reads the secret file and writes output as UTF-8
    env["SKYPILOT_DISABLE_USAGE_COLLECTION"] = "1"  # no telemetry from the worker's host
    return env


def anonymous_file(name: str, text: str) -> int:
    """A readable file descriptor holding ``text`` that no path names; the caller closes it."""
    if not hasattr(os, "memfd_create"):  # pragma: no cover - every supported worker is Linux
        raise CommandError(
            "CLI mode needs Linux memfd_create to hand the task and its secrets to `sky` "
            "without a file on disk",
            operation="sky",
        )
    fd = os.memfd_create(name, os.MFD_CLOEXEC)  # inherited only through pass_fds
    try:
        os.fchmod(fd, 0o600)
        data = text.encode("utf-8")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def fd_path(fd: int) -> str:
    """The name by which a child that inherited ``fd`` opens it."""
    return f"/dev/fd/{fd}"


@contextlib.contextmanager
def anonymous_files(files: Mapping[str, str]) -> Iterator[dict[str, int]]:
    """Several anonymous files at once, all closed on the way out."""
    opened: dict[str, int] = {}
    try:
        for name, text in files.items():
            opened[name] = anonymous_file(name, text)
        yield opened
    finally:
        for fd in opened.values():
            os.close(fd)
