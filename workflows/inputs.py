"""Turn a missing or non-JSON workflow input into a failed workflow, not a retried task.

Pydantic validates JSON input on arrival (``failure_exception_types=[ValidationError]`` fails the
workflow with the field named). A start with no input at all, or with a raw (non-JSON) payload,
never reaches pydantic; without this check it would fail the first workflow task, which Temporal
retries forever.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel
from temporalio.exceptions import ApplicationError

M = TypeVar("M", bound=BaseModel)


def require_input(value: object, model: type[M], workflow_name: str) -> M:
    if isinstance(value, model):
        return value
    got = "no input" if value is None else f"a {type(value).__name__} payload"
    example = ", ".join(sorted(model.model_fields))
    raise ApplicationError(
        f"{workflow_name} needs its input as JSON {model.__name__} (fields: {example}); "
        f"got {got}. Nothing was launched.",
        type="InvalidInput",
        non_retryable=True,
    )
