"""Codec server: decrypts (and encrypts) payloads for the Temporal web UI and CLI, with auth.

    python -m starter.codec_server                      # 127.0.0.1:8081, needs CODEC_SERVER_TOKEN
    python -m starter.codec_server --host 0.0.0.0       # e.g. in a container, token required
    python -m starter.codec_server --insecure-no-auth   # laptop only: loopback host, no token

Speaks the remote codec protocol (docs.temporal.io/codec-server): ``POST /encode`` and
``POST /decode`` (also under ``/{namespace}/``) take and return ``{"payloads": [...]}``, the proto
JSON of ``temporal.api.common.v1.Payloads``. Every codec call must be authenticated, either with
``Authorization: Bearer <CODEC_SERVER_TOKEN>`` (the CLI's ``--codec-auth``), or, for the web UI,
which cannot send a custom header, with the session cookie ``GET /login`` hands out once the
token is typed in (the UI then needs "Include cross-origin credentials"). Cookie requests are
only honoured from the configured CORS origins. Only TEMPORAL_NAMESPACE is served.

Exit codes: 0 stopped cleanly, 1 could not start (e.g. the port is taken), 2 bad configuration.
See docs/codec-server.md.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import html
import ipaddress
import logging
import os
import re
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from controlplane.config import (
    CODEC_TOKEN_HELP,
    KEY_HELP,
    ConfigError,
    Settings,
    load_settings,
)
from controlplane.logs import configure_logging
from starter.codec import EncryptionCodec, PayloadDecryptionError, codec_from_settings

log = logging.getLogger("starter.codec_server")

SESSION_COOKIE = "codec_session"
SESSION_MAX_AGE_S = 12 * 3600
MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_LOGIN_BODY_BYTES = 4096  # a form with one token field; /login needs no authentication
LOOPBACK_HOST_RE = re.compile(r"(localhost|127\.0\.0\.1|\[::1\])(:[0-9]{1,5})?")
ALLOWED_HEADERS = ["Authorization", "Content-Type", "X-Namespace"]
EXIT_OK, EXIT_STARTUP, EXIT_CONFIG = 0, 1, 2


def session_value(token: str) -> str:
    """The cookie that stands for the token: derived from it, so the token itself is not stored
    in the browser, and a new token invalidates every session."""
    label = b"controlplane codec-server session v1"
    return hmac.new(token.encode(), label, hashlib.sha256).hexdigest()


def _equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def is_loopback_host_header(value: str) -> bool:
    """``Host`` names this machine's loopback (with or without a port): against DNS rebinding,
    where a page on evil.example resolves its own name to 127.0.0.1 and talks to us."""
    return LOOPBACK_HOST_RE.fullmatch(value.strip().lower()) is not None


async def read_capped(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 once it passes ``limit``: a declared length is judged
    before reading, and a chunked body is read only up to the cap, never buffered whole."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"request body over {limit} bytes")
    return bytes(body)


@dataclass(frozen=True)
class CodecServerConfig:
    codec: EncryptionCodec
    namespace: str
    token: str | None  # None: no authentication (loopback only, --insecure-no-auth)
    cors_origins: tuple[str, ...]
    host: str
    port: int


def plan(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    insecure_no_auth: bool = False,
) -> CodecServerConfig:
    """Check that the server may start as asked; ConfigError says what to change."""
    problems: list[str] = []
    host = host if host is not None else settings.codec_server_host
    port = port if port is not None else settings.codec_server_port
    codec = codec_from_settings(settings)
    if codec is None:
        problems.append(
            "TEMPORAL_PAYLOAD_ENCRYPTION_KEY: not set; the codec server needs the key the workers "
            f"encrypt with (and TEMPORAL_PAYLOAD_PREVIOUS_KEYS for older histories); expected "
            f"{KEY_HELP}"
        )
    token = settings.codec_server_token
    if insecure_no_auth:
        if token is not None:
            problems.append(
                "--insecure-no-auth: CODEC_SERVER_TOKEN is set as well; drop the flag to require "
                "the token, or unset the token"
            )
        if not is_loopback(host):
            problems.append(
                f"--insecure-no-auth: only allowed on a loopback host (127.0.0.1, ::1, localhost), "
                f"not {host!r}; set CODEC_SERVER_TOKEN to serve on other interfaces"
            )
    elif token is None:
        problems.append(
            "CODEC_SERVER_TOKEN: not set; the codec server decrypts payloads and will not serve "
            f"them without authentication; {CODEC_TOKEN_HELP} (on a laptop, "
            "--insecure-no-auth serves a loopback host without a token)"
        )
    if not 1 <= port <= 65535:
        problems.append(f"--port: {port} is not a TCP port (1-65535)")
    if problems or codec is None:
        raise ConfigError(problems)
    return CodecServerConfig(
        codec=codec,
        namespace=settings.temporal_namespace,
        token=None if token is None else token.get_secret_value(),
        cors_origins=tuple(settings.codec_server_cors_origin_list),
        host=host,
        port=port,
    )


def _login_page(message: str = "", *, status_code: int = 200) -> HTMLResponse:
    note = f"<p><strong>{html.escape(message)}</strong></p>" if message else ""
    body = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Codec server sign-in</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>Codec server sign-in</h1>
{note}
<p>Paste the codec server token (<code>CODEC_SERVER_TOKEN</code>). This browser then keeps a
session cookie for 12 hours, which the Temporal web UI sends along when
<em>Include cross-origin credentials</em> is enabled in its codec server settings.</p>
<form method="post" action="login">
<input type="password" name="token" autocomplete="off" size="48" autofocus>
<button type="submit">Sign in</button>
</form>
</body></html>
"""
    return HTMLResponse(body, status_code=status_code, headers={"Cache-Control": "no-store"})


def create_app(config: CodecServerConfig) -> FastAPI:
    """The ASGI app; :func:`serve` runs it with uvicorn, tests may too."""
    app = FastAPI(
        title="controlplane codec server", docs_url=None, redoc_url=None, openapi_url=None
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(config.cors_origins),
        allow_methods=["POST"],
        allow_headers=ALLOWED_HEADERS,
        allow_credentials=True,
        max_age=600,
    )
    token = config.token
    expected_session = session_value(token) if token is not None else None

    if token is None:
        # Without a token, being on loopback is the only protection: refuse any request whose
        # Host is not a loopback name, so a rebound DNS name cannot reach us from a browser.
        @app.middleware("http")
        async def loopback_host_only(
            request: Request, call_next: Callable[[Request], Awaitable[Response]]
        ) -> Response:
            if not is_loopback_host_header(request.headers.get("host", "")):
                return JSONResponse(
                    {
                        "detail": "without CODEC_SERVER_TOKEN (--insecure-no-auth) only "
                        "loopback Host headers are served: localhost, 127.0.0.1 or [::1]"
                    },
                    status_code=421,
                )
            return await call_next(request)

    def authorize(request: Request) -> None:
        if token is None or expected_session is None:
            return
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and _equal(credential.strip(), token):
            return
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie is not None and _equal(cookie, expected_session):
            origin = request.headers.get("origin")
            if origin in config.cors_origins:
                return
            raise HTTPException(
                403,
                "the session cookie is only accepted from the configured web UI origins "
                "(CODEC_SERVER_CORS_ORIGINS)",
            )
        raise HTTPException(
            401,
            "authentication required: send 'Authorization: Bearer <CODEC_SERVER_TOKEN>' "
            "(temporal --codec-auth), or sign in at /login for the web UI",
            headers={"WWW-Authenticate": 'Bearer realm="codec-server"'},
        )

    def check_namespace(request: Request, namespace: str | None) -> None:
        for named in (namespace, request.headers.get("x-namespace")):
            if named and named != config.namespace:
                raise HTTPException(
                    403,
                    f"this codec server serves namespace {config.namespace!r} "
                    f"(TEMPORAL_NAMESPACE), not {named[:200]!r}",
                )

    async def read_payloads(request: Request) -> list[Payload]:
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            raise HTTPException(415, "expected Content-Type: application/json")
        body = await read_capped(request, MAX_BODY_BYTES)
        try:
            message = json_format.Parse(body, Payloads(), ignore_unknown_fields=True)
        except (json_format.ParseError, ValueError) as exc:
            raise HTTPException(
                400, f'expected {{"payloads": [...]}} (proto JSON of Payloads): {exc}'
            ) from None
        return list(message.payloads)

    def reply(payloads: list[Payload]) -> JSONResponse:
        return JSONResponse(
            {"payloads": [json_format.MessageToDict(p) for p in payloads]},
            headers={"Cache-Control": "no-store"},
        )

    async def run(request: Request, namespace: str | None, operation: str) -> JSONResponse:
        authorize(request)
        check_namespace(request, namespace)
        payloads = await read_payloads(request)
        if operation == "encode":
            return reply(await config.codec.encode(payloads))
        try:
            return reply(await config.codec.decode(payloads))
        except PayloadDecryptionError as exc:
            raise HTTPException(422, str(exc)) from None

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/encode")
    async def encode(request: Request) -> JSONResponse:
        return await run(request, None, "encode")

    @app.post("/decode")
    async def decode(request: Request) -> JSONResponse:
        return await run(request, None, "decode")

    @app.post("/{namespace}/encode")
    async def encode_in(request: Request, namespace: str) -> JSONResponse:
        return await run(request, namespace, "encode")

    @app.post("/{namespace}/decode")
    async def decode_in(request: Request, namespace: str) -> JSONResponse:
        return await run(request, namespace, "decode")

    @app.get("/login")
    async def login_form() -> HTMLResponse:
        return _login_page()

    @app.post("/login")
    async def login(request: Request) -> Response:
        if token is None or expected_session is None:
            return _login_page("This codec server runs without authentication; no sign-in needed.")
        body = await read_capped(request, MAX_LOGIN_BODY_BYTES)
        fields = parse_qs(body.decode("utf-8", errors="replace"))
        given = (fields.get("token") or [""])[0].strip()
        if not _equal(given, token):
            return _login_page("Wrong token.", status_code=401)
        response = _login_page(
            "Signed in. In the web UI, open the codec server settings, enter this server's "
            "address as the endpoint and enable 'Include cross-origin credentials'."
        )
        secure = request.url.scheme == "https"
        response.set_cookie(
            SESSION_COOKIE,
            expected_session,
            max_age=SESSION_MAX_AGE_S,
            httponly=True,
            secure=secure,
            samesite="none" if secure else "strict",
        )
        return response

    @app.post("/logout")
    async def logout() -> Response:
        response = _login_page("Signed out.")
        response.delete_cookie(SESSION_COOKIE)
        return response

    return app


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m starter.codec_server", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", help="address to bind (default: CODEC_SERVER_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: CODEC_SERVER_PORT, 8081)")
    parser.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve without CODEC_SERVER_TOKEN; refused unless the host is loopback",
    )
    return parser


def serve(config: CodecServerConfig, log_level: str) -> int:
    app = create_app(config)
    log.info(
        "codec server for namespace %s on http://%s:%s (%s; current key id %s, key ids %s; "
        "CORS origins %s)",
        config.namespace,
        config.host,
        config.port,
        "bearer token required" if config.token is not None else "NO AUTHENTICATION",
        config.codec.current_key_id,
        ",".join(sorted(config.codec.key_ids)),
        ",".join(config.cors_origins) or "none",
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_config=None,  # records go through the root handler and its secret redactor
            log_level=log_level.lower(),
            server_header=False,
        )
    )
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal through the
    # handlers it found; leave it ones that do nothing, so a requested stop exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop_requested)
    try:
        server.run()
    except SystemExit:  # uvicorn's way of saying it could not start (e.g. port taken)
        return EXIT_STARTUP
    if not server.started:
        return EXIT_STARTUP
    log.info("codec server stopped")
    return EXIT_OK


def _stop_requested(signum: int, frame: FrameType | None) -> None:
    """Runs only after uvicorn has already shut down for this signal."""


def main(argv: list[str] | None = None) -> int:
    args: Any = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        config = plan(
            settings, host=args.host, port=args.port, insecure_no_auth=args.insecure_no_auth
        )
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log_level.value, settings.secret_values())
    return serve(config, settings.log_level.value)


if __name__ == "__main__":
    code = main()
    # Flush, then leave without interpreter finalisation, like the other command lines.
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)
