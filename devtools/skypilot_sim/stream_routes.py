"""``GET /api/stream``: a request's log, as sky/server/server.py and stream_utils.py serve it.

Plain text, chunked, with the server's cache and buffering headers and
``X-SkyPilot-Stream-Request-ID``. While the request is still PENDING the stream says so
(``Waiting for '<name>' request to be scheduled: <id>``, padded as the real server pads it);
then it sends the log (its last ``tail`` lines first, when asked), follows it until the request
finishes, and ends. A cancelled request's stream ends with the server's cancellation line. The
error of a failed request is never in the log (only ``/api/get`` carries it).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Literal

from fastapi import APIRouter, HTTPException
from fastapi import Request as HttpRequest
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from devtools.skypilot_sim.records import Request, RequestStatus
from devtools.skypilot_sim.routes import expand_request_id, sim_state

router = APIRouter()

STREAM_REQUEST_HEADER = "X-SkyPilot-Stream-Request-ID"
_HEADERS = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}
_POLL_S = 0.05
_BROWSERS = ("mozilla", "chrome", "safari", "edge")
Format = Literal["auto", "plain", "html", "console"]


def _payload(control: str, message: str) -> str:
    """message_utils.encode_payload(rich_utils.Control.<X>.encode(message))."""
    return f"<sky-payload>{json.dumps(f'<{control}>{message}</{control}>')}</sky-payload>\n"


async def _waiting(request: Request, *, plain: bool, follow: bool) -> AsyncIterator[str]:
    """wait_for_request_to_start: say the request is queued until a worker picks it up."""
    message = f"Waiting for {request.name!r} request to be scheduled: {request.request_id}"
    spinner = not plain and request.schedule_type == "long"
    checking = f"[dim]Checking request: {request.request_id}[/dim]"
    if spinner:
        yield _payload("rich_init", checking)
        yield _payload("rich_start", checking)
    said = False
    while request.status == RequestStatus.PENDING:
        if spinner:
            yield _payload("rich_update", f"[dim]{request.status_msg or message}[/dim]")
        elif plain and not said:
            said = True
            yield (request.status_msg or message) + " " * 4096 + "\n"
        if not follow:
            break
        await asyncio.sleep(_POLL_S)
    if spinner:
        yield _payload("rich_stop", "")


async def _log(
    request: Request, *, plain: bool, tail: int | None, follow: bool
) -> AsyncIterator[str]:
    async for chunk in _waiting(request, plain=plain, follow=follow):
        yield chunk
    position = 0
    if tail is not None:
        position = max(len(request.log) - max(tail, 0), 0) if tail >= 0 else 0
    while True:
        finished = request.status.finished  # read before the lines, so none is missed
        if position < len(request.log):
            yield "".join(request.log[position:])
            position = len(request.log)
        if finished or not follow:
            break
        await asyncio.sleep(_POLL_S)
    if request.status == RequestStatus.CANCELLED and request.error is None:
        yield f"{request.name!r} request {request.request_id} cancelled\n"


@router.get("/api/stream", response_model=None)
async def stream(
    http: HttpRequest,
    request_id: str | None = None,
    log_path: str | None = None,
    tail: int | None = None,
    follow: bool = True,
    format: Format = "auto",
) -> Response:
    if request_id is not None and log_path is not None:
        raise HTTPException(
            status_code=400, detail="Only one of request_id and log_path can be provided"
        )
    state = sim_state(http)
    if log_path is not None:  # the simulator keeps no log files
        raise HTTPException(status_code=404, detail=f"Log path {log_path!r} does not exist")
    if request_id is not None:
        request = expand_request_id(state, request_id)
    else:
        latest = sorted(state.requests.values(), key=lambda r: r.created_at)
        if not latest:
            raise HTTPException(status_code=404, detail="No request found")
        request = latest[-1]
    user_agent = http.headers.get("user-agent", "").lower()
    if format == "html" or (format == "auto" and any(b in user_agent for b in _BROWSERS)):
        page = f"<!DOCTYPE html><html><body><pre data-src='{http.url}'></pre></body></html>"
        return HTMLResponse(page, headers=_HEADERS)
    headers = {**_HEADERS, "Transfer-Encoding": "chunked"}
    headers[STREAM_REQUEST_HEADER] = request_id or request.request_id
    return StreamingResponse(
        _log(request, plain=format == "plain", tail=tail, follow=follow),
        media_type="text/plain",
        headers=headers,
    )
