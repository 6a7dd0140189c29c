"""Normalized response shapes, for comparing the simulator with the real server.

A shape keeps what a client can rely on and drops what differs by nature (ids, timestamps,
tracebacks): the status, the content type, the headers that matter, the JSON type tree of the
body (with JSON-in-a-string fields decoded), and the values the client reads.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Headers whose value the client (or a proxy in front of the server) acts on.
VALUE_HEADERS = (
    "content-type",
    "cache-control",
    "www-authenticate",
    "x-accel-buffering",
    "x-skypilot-api-version",
    "x-skypilot-version",
)
# Headers whose presence matters, not their value.
PRESENCE_HEADERS = ("x-skypilot-request-id", "x-skypilot-stream-request-id", "retry-after")
# Fields holding JSON in a string (contract §4.2): compared decoded.
JSON_STRING_FIELDS = frozenset({"return_value", "error", "request_body"})
# Fields whose value the client depends on (besides their type).
VALUE_FIELDS = frozenset({"status", "name", "schedule_type", "type", "api_version", "version"})


def normalize_text(text: str) -> str:
    return UUID.sub("<id>", text)


def type_tree(value: Any, key: str | None = None) -> Any:
    """The JSON type of ``value``: dicts by key, lists by the union of their elements' trees."""
    if key in JSON_STRING_FIELDS and isinstance(value, str):
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError:
            return "str(not json)"
        return {"json": type_tree(decoded)}
    if isinstance(value, dict):
        return {k: type_tree(v, k) for k, v in sorted(value.items())}
    if isinstance(value, list):
        trees = []
        for item in value:
            tree = type_tree(item)
            if tree not in trees:
                trees.append(tree)
        return ["list", *trees]
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if value is None:
        return "null"
    return "str"


def depended_values(value: Any, key: str | None = None, path: str = "") -> dict[str, Any]:
    """``path → value`` of the fields a client decides on (ids normalized)."""
    out: dict[str, Any] = {}
    if key in JSON_STRING_FIELDS and isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return out
    if isinstance(value, dict):
        for k, v in value.items():
            out.update(depended_values(v, k, f"{path}.{k}" if path else k))
    elif isinstance(value, list):
        for item in value:
            out.update(depended_values(item, None, f"{path}[]"))
    elif key in VALUE_FIELDS or (key == "detail" and isinstance(value, str)):
        out[path] = normalize_text(value) if isinstance(value, str) else value
    elif key == "message" and isinstance(value, str) and path.startswith(("detail.error", "error")):
        out[path] = normalize_text(value)
    return out


def shape(response: httpx.Response) -> dict[str, Any]:
    """The comparable shape of one response."""
    headers = {name: response.headers.get(name) for name in VALUE_HEADERS}
    headers.update({name: name in response.headers for name in PRESENCE_HEADERS})
    out: dict[str, Any] = {"status": response.status_code, "headers": headers}
    content_type = response.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        body = response.json()
        out["body"] = type_tree(body)
        out["values"] = depended_values(body)
    else:
        out["body"] = "text"
    return out


def differences(left: Any, right: Any, path: str = "") -> list[str]:
    """Where two shapes differ, as ``path: left != right`` lines."""
    if isinstance(left, dict) and isinstance(right, dict):
        found = []
        for key in sorted(set(left) | set(right), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in left:
                found.append(f"{sub}: missing on the left")
            elif key not in right:
                found.append(f"{sub}: missing on the right")
            else:
                found += differences(left[key], right[key], sub)
        return found
    if left != right:
        return [f"{path}: {left!r} != {right!r}"]
    return []
