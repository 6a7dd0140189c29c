"""The simulator as an ASGI application: SkyPilot's routes behind SkyPilot's middleware."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.types import Receive, Scope, Send

from devtools.skypilot_sim import routes, sim_routes, stream_routes
from devtools.skypilot_sim.config import SimConfig
from devtools.skypilot_sim.delivery import deliver
from devtools.skypilot_sim.middleware import (
    APIVersionMiddleware,
    BearerAuthMiddleware,
    BusyMiddleware,
    RequestIdMiddleware,
)
from devtools.skypilot_sim.payloads import SERVER_ENV_VARS
from devtools.skypilot_sim.state import SimState


class SimulatorApp(FastAPI):
    """FastAPI with the delivery layer outside everything, so it sees the server's own ``send``."""

    sim: SimState

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        token = SERVER_ENV_VARS.set(self.sim.server_env_vars())
        try:
            await deliver(super().__call__, self.sim, scope, receive, send)
        finally:
            SERVER_ENV_VARS.reset(token)


def create_app(config: SimConfig) -> FastAPI:
    """A simulator app with fresh state (``app.state.sim``)."""
    state = SimState(config)
    app = SimulatorApp(
        title="SkyPilot API server simulator",
        # debug=True as on the real server: an uncaught exception answers a text/plain traceback.
        debug=True,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(BearerAuthMiddleware, state=state),
            Middleware(APIVersionMiddleware),
            Middleware(BusyMiddleware, state=state),
        ],
    )
    app.sim = state
    app.state.sim = state
    app.include_router(routes.router)
    app.include_router(stream_routes.router)
    app.include_router(sim_routes.router)
    return app
