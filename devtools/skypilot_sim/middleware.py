"""The real server's middleware behaviour, as pure ASGI layers (contract §4.1, §6, §7).

Order, outermost first, as in ``sky/server/server.py``: request id + security headers, bearer
(service-account) auth, API-version check, then the simulator's 503 bursts just above the
routes. An exception raised in a layer reaches Starlette's debug error handler and becomes a
text/plain 500 traceback without a request id, as a middleware crash does on the real server.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from devtools.skypilot_sim.contract import (
    API_VERSION,
    API_VERSION_HEADER,
    AUTH_MODE_HEADER,
    MIN_COMPATIBLE_API_VERSION,
    REQUEST_ID_HEADER,
    SECURITY_HEADERS,
    VERSION,
    VERSION_HEADER,
    WORKER_EXHAUSTED_DETAIL,
    client_too_old_message,
)
from devtools.skypilot_sim.state import SimState

# Keys the layers leave in the ASGI scope for the routes.
REQUEST_ID_KEY = "sim.request_id"
AUTH_USER_KEY = "sim.auth_user"
CLIENT_API_VERSION_KEY = "sim.client_api_version"

HEALTH_PATH = "/api/health"
SIM_PREFIX = "/sim/"


@dataclass(frozen=True)
class AuthUser:
    """A caller authenticated by a service-account token."""

    id: str
    name: str

    @classmethod
    def for_token(cls, token: str) -> AuthUser:
        """A stable identity per token, shaped like SkyPilot's ``sa-<16 hex>`` user ids."""
        user_id = "sa-" + hashlib.sha256(token.encode()).hexdigest()[:16]
        return cls(id=user_id, name=user_id)

    def as_health_user(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "password": None,
            "created_at": int(time.time()),
            "user_type": "sa",
            "preferred_workspace": None,
        }


def request_id_of(scope: Scope) -> str:
    return str(scope[REQUEST_ID_KEY])


def auth_user_of(scope: Scope) -> AuthUser | None:
    user = scope.get(AUTH_USER_KEY)
    return user if isinstance(user, AuthUser) else None


def client_api_version_of(scope: Scope) -> int | None:
    version = scope.get(CLIENT_API_VERSION_KEY)
    return version if isinstance(version, int) else None


def _is_sim_path(scope: Scope) -> bool:
    return str(scope["path"]).startswith(SIM_PREFIX)


def _with_headers(send: Send, headers: list[tuple[str, str]]) -> Send:
    """A ``send`` that adds ``headers`` to the response start."""

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = list(message.get("headers", []))
            mutable = MutableHeaders(scope=message)
            for name, value in headers:
                mutable[name] = value
        await send(message)

    return send_with_headers


class RequestIdMiddleware:
    """Every response gets a fresh ``X-Skypilot-Request-ID``; async POSTs store it as their id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = str(uuid.uuid4())
        scope[REQUEST_ID_KEY] = request_id
        headers = [(REQUEST_ID_HEADER, request_id)]
        headers += [(name.decode(), value.decode()) for name, value in SECURITY_HEADERS]
        await self.app(scope, receive, _with_headers(send, headers))


def _unauthorized(detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=401, headers={"Cache-Control": "no-store"})


class BearerAuthMiddleware:
    """Service-account tokens (``Bearer sky_...``) are checked on every call, even on loopback.

    A Bearer token without the ``sky_`` prefix is ignored, as on the real server. A bad
    ``sky_`` token is refused even on /api/health (the real server's bearer middleware has no
    exemption); a call without a token is refused under ``require_auth`` except on /api/health.
    /sim/* is never checked.
    """

    def __init__(self, app: ASGIApp, state: SimState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _is_sim_path(scope):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        authorization = headers.get("authorization")
        forced = headers.get(AUTH_MODE_HEADER) == "token"
        sky_bearer = (
            authorization is not None
            and authorization.lower().startswith("bearer ")
            and authorization.split(" ", 1)[1].startswith("sky_")
        )
        if forced or sky_bearer:
            detail = self._check_token(scope, authorization)
        elif self.state.config.require_auth and scope["path"] != HEALTH_PATH:
            detail = "Authentication required"
        else:
            detail = None
        if detail is not None:
            await _unauthorized(detail)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _check_token(self, scope: Scope, authorization: str | None) -> str | None:
        """Record the token's user in the scope, or return the 401 detail."""
        if authorization is None:
            return "Authentication required"
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return "Invalid authentication method"
        tokens = self.state.config.service_account_tokens
        if not tokens:
            return "Service account authentication disabled"
        if token not in tokens:
            return "Invalid or expired service account token"
        scope[AUTH_USER_KEY] = AuthUser.for_token(token)
        return None


class APIVersionMiddleware:
    """Check the client's version headers when it sends both, and then answer with ours."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _is_sim_path(scope):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        api_version, version = headers.get(API_VERSION_HEADER), headers.get(VERSION_HEADER)
        if api_version is None or version is None:
            await self.app(scope, receive, send)
            return
        try:
            client_api_version = int(api_version)
        except ValueError:
            # Uncaught on purpose: the real server answers a text/plain 500 traceback.
            raise ValueError(
                f"Header {API_VERSION_HEADER}: {api_version} is not a valid API version."
            ) from None
        ours = [(API_VERSION_HEADER, str(API_VERSION)), (VERSION_HEADER, VERSION)]
        send = _with_headers(send, ours)
        if client_api_version < MIN_COMPATIBLE_API_VERSION:
            body = {"error": "version_mismatch", "message": client_too_old_message(version)}
            await JSONResponse(body, status_code=400)(scope, receive, send)
            return
        scope[CLIENT_API_VERSION_KEY] = client_api_version
        await self.app(scope, receive, send)


class BusyMiddleware:
    """Injected 503 bursts: the real server's answer when its request workers are exhausted."""

    def __init__(self, app: ASGIApp, state: SimState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        exempt = scope["type"] != "http" or _is_sim_path(scope) or scope["path"] == HEALTH_PATH
        if not exempt and self.state.take_unavailable():
            retry_after = str(self.state.faults.retry_after_s)
            response = JSONResponse(
                {"detail": WORKER_EXHAUSTED_DETAIL},
                status_code=503,
                headers={"Retry-After": retry_after},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
