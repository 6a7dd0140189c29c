"""Endpoints that are not SkyPilot's: the simulator's controls and the clusters' model servers.

``/sim/models/{cluster}/...`` stands in for the vLLM server a real cluster would run (what
``/endpoints`` points at; ``POST /sim/models/{cluster}/crash|hang|recover`` break and mend it);
the other ``/sim/*`` routes let tests, demos and benchmarks read
counters, inject faults, reset, and preempt clusters. None of them need auth.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException
from fastapi import Request as HttpRequest
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from devtools.skypilot_sim.records import Cluster, ClusterStatus, ModelFault, cluster_record
from devtools.skypilot_sim.routes import sim_state

router = APIRouter(prefix="/sim")


@router.get("/counters")
async def counters(http: HttpRequest) -> dict[str, Any]:
    return sim_state(http).counters()


@router.get("/timeline")
async def timeline(http: HttpRequest) -> dict[str, dict[str, float]]:
    """Wall-clock moments of every cluster ever created: created_at, up_at, model_ready_at
    (when its model's /health turns 200), gone_at. For benchmarks; kept until /sim/reset."""
    return sim_state(http).cluster_timeline()


@router.get("/history")
async def history(http: HttpRequest) -> list[dict[str, Any]]:
    """Every cluster ever created (one entry per incarnation), live or gone, oldest first:
    name, cluster_hash, launch_request_id, launched_at, status, live, gone_at. For leak checks
    that must see clusters nobody listed at the end; kept until /sim/reset."""
    return sim_state(http).cluster_history()


@router.get("/faults")
async def get_faults(http: HttpRequest) -> dict[str, Any]:
    return sim_state(http).faults.model_dump()


@router.post("/faults")
async def set_faults(http: HttpRequest, changes: Annotated[dict[str, Any], Body()]) -> JSONResponse:
    """Partial update of the faults; answers the faults now in force."""
    try:
        faults = sim_state(http).update_faults(changes)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False)
        return JSONResponse({"detail": errors}, status_code=422)
    return JSONResponse(faults.model_dump())


@router.get("/timings")
async def get_timings(http: HttpRequest) -> dict[str, float]:
    return sim_state(http).timings()


@router.post("/timings")
async def set_timings(
    http: HttpRequest, changes: Annotated[dict[str, Any], Body()]
) -> JSONResponse:
    """Partial update of the timings (launch_delay_s, model_warmup_s, ...); answers them all."""
    try:
        timings = sim_state(http).update_timings(changes)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False)
        return JSONResponse({"detail": errors}, status_code=422)
    except ValueError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=422)
    return JSONResponse(timings)


@router.post("/reset")
async def reset(http: HttpRequest) -> dict[str, Any]:
    state = sim_state(http)
    state.reset()
    return state.counters()


@router.get("/clusters")
async def clusters(http: HttpRequest) -> list[dict[str, Any]]:
    return [cluster_record(c, include_credentials=False) for c in sim_state(http).clusters.values()]


@router.post("/clusters/{name}/preempt")
async def preempt(http: HttpRequest, name: str) -> dict[str, Any]:
    if not sim_state(http).preempt(name):
        raise HTTPException(status_code=404, detail=f"Cluster {name!r} not found")
    return {"preempted": name}


def _serving_cluster(http: HttpRequest, name: str) -> Cluster:
    cluster = sim_state(http).clusters.get(name)
    if cluster is None or cluster.status != ClusterStatus.UP:
        raise HTTPException(status_code=404, detail=f"No model server on cluster {name!r}")
    return cluster


def _warm(http: HttpRequest, cluster: Cluster) -> bool:
    warmup = sim_state(http).config.model_warmup_s
    return cluster.up_since is not None and time.monotonic() - cluster.up_since >= warmup


async def _answering_cluster(http: HttpRequest, name: str) -> Cluster | JSONResponse:
    """The serving cluster, after any injected hang; a 503 answer if its model is down."""
    cluster = _serving_cluster(http, name)
    while cluster.model_fault is ModelFault.HANG:
        await cluster.model_recovered.wait()  # never answers until /recover (or the cluster goes)
        cluster = _serving_cluster(http, name)
    if cluster.model_fault is ModelFault.CRASH:
        return JSONResponse({"status": "crashed"}, status_code=503)
    if not _warm(http, cluster):
        return JSONResponse({"status": "loading"}, status_code=503)
    return cluster


@router.get("/models/{name}/health")
async def model_health(http: HttpRequest, name: str) -> JSONResponse:
    """vLLM's /health: 503 while the model loads (or after a crash), 200 once it serves."""
    answer = await _answering_cluster(http, name)
    if isinstance(answer, JSONResponse):
        return answer
    return JSONResponse({"status": "ok"})


@router.post("/models/{name}/{fault}")
async def model_fault(http: HttpRequest, name: str, fault: str) -> dict[str, Any]:
    """crash: /health answers 503; hang: it never answers; recover: undo both. The cluster
    stays UP throughout, as a dead vLLM on a live VM does."""
    if fault not in ("crash", "hang", "recover"):
        raise HTTPException(
            status_code=404, detail=f"unknown model fault {fault!r}; expected crash, hang, recover"
        )
    chosen = None if fault == "recover" else ModelFault(fault)
    if not sim_state(http).set_model_fault(name, chosen):
        raise HTTPException(status_code=404, detail=f"Cluster {name!r} not found")
    return {"cluster": name, "model_fault": chosen.value if chosen else None}


@router.get("/models/{name}/v1/models")
async def model_list(http: HttpRequest, name: str) -> JSONResponse:
    """vLLM's OpenAI-compatible model list, once the model is loaded."""
    answer = await _answering_cluster(http, name)
    if isinstance(answer, JSONResponse):
        return answer
    cluster = answer
    model = cluster.spec.envs.get("MODEL_ID") or cluster.name
    return JSONResponse(
        {
            "object": "list",
            "data": [
                {
                    "id": model,
                    "object": "model",
                    "created": cluster.status_updated_at,
                    "owned_by": "vllm",
                    "root": model,
                    "parent": None,
                    "max_model_len": 8192,
                    "permission": [],
                }
            ],
        }
    )
