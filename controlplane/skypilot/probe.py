"""Readiness of the model itself: the vLLM server's /health on the cluster's exposed port.

A cluster that is UP is not yet a node that serves; only a 200 from the model's /health is.
"""

from __future__ import annotations

import httpx

from controlplane.health.probe import endpoint_url


def health_url(endpoint: str) -> str:
    """The readiness URL: the endpoint's /health (SkyPilot's endpoints are "host:port")."""
    return endpoint_url(endpoint, "/health")


async def model_is_ready(http: httpx.AsyncClient, endpoint: str, *, timeout: float = 5.0) -> bool:
    """True when the model answers 200; any other answer or no answer means not yet."""
    try:
        response = await http.get(health_url(endpoint), timeout=timeout)
    except httpx.TransportError:
        return False
    return response.status_code == 200
