"""Readiness of the model itself: the vLLM server's /health on the cluster's exposed port.

A cluster that is UP is not yet a node that serves; only a 200 from the model's /health is.
"""

from __future__ import annotations

import httpx


def health_url(endpoint: str) -> str:
    """SkyPilot's endpoints are "host:port" (sometimes with a scheme or path); add /health."""
    base = endpoint if "://" in endpoint else f"http://{endpoint}"
    return base.rstrip("/") + "/health"


async def model_is_ready(http: httpx.AsyncClient, endpoint: str, *, timeout: float = 5.0) -> bool:
    """True when the model answers 200; any other answer or no answer means not yet."""
    try:
        response = await http.get(health_url(endpoint), timeout=timeout)
    except httpx.TransportError:
        return False
    return response.status_code == 200
