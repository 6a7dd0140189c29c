"""Constants and wire encodings of the SkyPilot 0.14.1 API server that the simulator repeats.

Values are copied from the released package (``sky/server/constants.py``, ``versions.py``,
``requests/requests.py``, ``requests/serializers``) so clients see byte-for-byte what they would
see from the real server.
"""

from __future__ import annotations

import base64
import json
import pickle
from typing import Any

from controlplane.cluster_names import SKYPILOT_CLUSTER_NAME_PATTERN

API_VERSION = 62
VERSION = "0.14.1"
COMMIT = "7e595970a806dcc9eefadf459f399edf1733e962"
MIN_COMPATIBLE_API_VERSION = 24
MIN_COMPATIBLE_VERSION = "0.11.0"

API_VERSION_HEADER = "X-SkyPilot-API-Version"
VERSION_HEADER = "X-SkyPilot-Version"
REQUEST_ID_HEADER = "X-Skypilot-Request-ID"
AUTH_MODE_HEADER = "X-Skypilot-Auth-Mode"

USER_ID_ENV_VAR = "SKYPILOT_USER_ID"
USER_ENV_VAR = "SKYPILOT_USER"
SYSTEM_USER_ID = "skypilot-system"

# pickle.dumps(None), base64: what the server sends for an absent handle or pickled None.
EMPTY_PICKLED_VALUE = "gAROLg=="

# Regex a cluster name must fully match (sky/skylet/constants.py; controlplane.cluster_names).
CLUSTER_NAME_VALID_REGEX = SKYPILOT_CLUSTER_NAME_PATTERN

# Columns /api/status accepts in ``fields`` (sky/server/requests/requests.py REQUEST_COLUMNS).
REQUEST_COLUMNS = [
    "request_id",
    "name",
    "entrypoint",
    "request_body",
    "status",
    "return_value",
    "error",
    "pid",
    "created_at",
    "cluster_name",
    "schedule_type",
    "user_id",
    "status_msg",
    "should_retry",
    "finished_at",
    "file_mounts_blob_id",
]

# The internal daemons a real server lists among its active requests (contract §4.2).
DAEMON_REQUESTS = [
    ("skypilot-status-refresh-daemon", "sky.status-refresh"),
    ("skypilot-volume-status-refresh-daemon", "sky.volume-refresh"),
    ("expired-token-cleanup-daemon", "sky.expired-token-cleanup"),
]

_YELLOW = "\x1b[33m"
_RESET = "\x1b[0m"
_BOLD = "\x1b[1m"

NO_CLOUD_ACCESS_MESSAGE = f"Cloud access is not set up. Run: {_BOLD}sky check{_RESET}"
WORKER_EXHAUSTED_DETAIL = (
    "The server has exhausted its concurrent worker limit. "
    "Please try again or scale the server if the load persists."
)

# SecurityHeadersMiddleware's headers for non-HTML responses.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self' https://usage-v3.skypilot.co; "
        b"style-src 'self' 'unsafe-inline'; font-src 'self'; "
        b"connect-src 'self' https://usage-v3.skypilot.co http://localhost:* "
        b"http://127.0.0.1:*; worker-src 'self' blob:; frame-src 'self'; "
        b"img-src 'self' data:; object-src 'none'; base-uri 'self'; "
        b"form-action 'self'; frame-ancestors 'self'",
    ),
    (b"x-frame-options", b"SAMEORIGIN"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"strict-origin-when-cross-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]


def client_too_old_message(client_version: str) -> str:
    """versions.CLIENT_TOO_OLD_ERROR, formatted as the server formats it."""
    return (
        f"{_YELLOW}Your SkyPilot client version is too old:{client_version}\n{_RESET}"
        f"The server is running on {VERSION} and the minimum compatible version is "
        f"{MIN_COMPATIBLE_VERSION}.\n"
        f'Upgrade your client with:\n{_YELLOW}pip install -U "skypilot=={VERSION}"{_RESET}'
    )


def compact_json(value: Any) -> str:
    """JSON the way orjson writes it (no spaces, non-ASCII kept), as the server stores it."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def pickle_b64(value: Any) -> str:
    """base64 of a pickle, the server's encoding for handles, bodies and error objects."""
    return base64.b64encode(pickle.dumps(value)).decode("ascii")


def pickled_function_b64(module: str, qualname: str) -> str:
    """A pickle that names a function by reference, as the server pickles request entrypoints.

    Written by hand (GLOBAL opcode) because the simulator does not have SkyPilot's functions.
    """
    raw = b"\x80\x04c" + f"{module}\n{qualname}\n".encode() + b"."
    return base64.b64encode(raw).decode("ascii")
