"""SkyPilot's exceptions as the simulator raises and serializes them.

Clients only see an exception's class name and message, so the simulator makes classes with
SkyPilot's names on demand and serializes them the way ``sky.exceptions.serialize_exception``
and ``Request.set_error`` do: a dict with ``type``, ``message``, ``args``, ``attributes`` and
``stacktrace``, pickled and base64-encoded into the request's ``error.object``.
"""

from __future__ import annotations

import traceback
from typing import Any

from fastapi.encoders import jsonable_encoder

from devtools.skypilot_sim.contract import compact_json, pickle_b64


class SkyPilotError(Exception):
    """Base of the simulated exceptions; subclasses carry SkyPilot's class names."""


class CloudError(SkyPilotError):
    """sky.exceptions.CloudError: how the server ships an exception from a foreign package."""

    def __init__(self, message: str, cloud_provider: str, error_type: str) -> None:
        super().__init__(message)
        self.cloud_provider = cloud_provider
        self.error_type = error_type

    def __str__(self) -> str:
        return f"{self.cloud_provider} error ({self.error_type}): {super().__str__()}"


CloudError.__module__ = "sky.exceptions"


_classes: dict[str, type[SkyPilotError]] = {}


def error_class(type_name: str) -> type[SkyPilotError]:
    """A subclass of SkyPilotError called ``type_name``, the same class for the same name."""
    cls = _classes.get(type_name)
    if cls is None:
        cls = type(type_name, (SkyPilotError,), {"__module__": "sky.exceptions"})
        _classes[type_name] = cls
    return cls


def sky_error(type_name: str, message: str) -> SkyPilotError:
    """An exception instance that serializes as SkyPilot's ``type_name`` with ``message``."""
    return error_class(type_name)(message)


def _stacktrace(error: BaseException) -> str:
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))


def _is_safe(error: BaseException) -> bool:
    module = type(error).__module__
    return module == "builtins" or module.startswith("sky.")


def serialize_exception(error: BaseException) -> dict[str, Any]:
    """sky.exceptions.serialize_exception: what /validate puts in its 400 ``detail``.

    An exception from another package (a YAML parser error, say) is shipped as a CloudError,
    which has no stack trace, exactly as the server's wrap_exception does.
    """
    if _is_safe(error):
        shipped, stacktrace = error, _stacktrace(error)
    else:
        provider = type(error).__module__.split(".")[0]
        shipped, stacktrace = CloudError(str(error), provider, type(error).__name__), None
    attributes = {k: v for k, v in vars(shipped).items() if k != "stacktrace"}
    return {
        "type": type(shipped).__name__,
        "message": str(shipped),
        "args": shipped.args,
        "attributes": attributes,
        "stacktrace": stacktrace,
    }


def serialize_exception_json(error: BaseException) -> Any:
    """The serialized exception made JSON-safe (YAML errors carry Mark objects in their args)."""
    return jsonable_encoder(serialize_exception(error))


def request_error(error: BaseException) -> dict[str, Any]:
    """Request.set_error: the ``error`` column of a failed request, before JSON encoding.

    ``type`` and ``message`` name the original exception, even when ``object`` wraps it.
    """
    return {
        "object": pickle_b64(serialize_exception_json(error)),
        "type": type(error).__name__,
        "message": str(error),
    }


def request_error_json(error: dict[str, Any] | None) -> str:
    """The ``error`` field of the full-form payload: a JSON string, ``"null"`` without error."""
    return compact_json(error)
