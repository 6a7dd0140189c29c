"""Workflow tests: the real workflows, fake activities, Temporal's time-skipping test server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from tests.support.temporal_env import test_server_path


@pytest.fixture
async def env() -> AsyncIterator[WorkflowEnvironment]:
    # Function-scoped on purpose: a shared time-skipping clock leaks between tests.
    environment = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=test_server_path(), data_converter=pydantic_data_converter
    )
    try:
        yield environment
    finally:
        await environment.shutdown()


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def local_env(dev_server: WorkflowEnvironment) -> WorkflowEnvironment:
    """The real dev server (tests/conftest.py's ``dev_server``), for updates that wait on timers
    (the test server mishandles them: sdk-java #1903, sdk-python #675)."""
    return dev_server
