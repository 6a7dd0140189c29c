"""Database steps retry until Postgres answers: no total deadline, and every failed attempt is
counted for the DatabaseStepsFailing alert (issue 10, path 2).

A guard on the options, standing in while the workflow-level test
(tests/workflows/test_leakproof.py::test_database_outage_longer_than_the_old_deadline_does_not_fail_the_node)
is skipped: the steps are local activities now, whose retry backoff (at most 30 s, below the
SDK's one-minute local-retry threshold) runs in real time, not in the test server's skipped time.
Before the fix the steps had a 15-minute schedule-to-close, after which the workflow failed with
its row live and its cluster running.
"""

from __future__ import annotations

import pytest
from temporalio.common import RetryPolicy
from temporalio.testing import ActivityEnvironment

from activities.records import RecordActivities
from controlplane import lifecycle
from controlplane.config import load_settings
from controlplane.db.engine import create_engine
from controlplane.db.errors import DATABASE_ERRORS
from controlplane.db.repository import NodeRepository
from controlplane.metric_names import DATABASE_STEP_FAILURES
from controlplane.metrics import Metrics
from tests.support.ports import free_port
from workflows import options
from workflows.models import TransitionInput


def test_database_steps_have_no_total_deadline_and_no_attempt_limit() -> None:
    assert options.DATABASE.schedule_to_close is None
    policy = options.DATABASE.retry_policy
    assert isinstance(policy, RetryPolicy)
    assert policy.maximum_attempts == 0  # unlimited
    # A failing attempt is bounded, so each retry can see Postgres come back.
    assert options.DATABASE.start_to_close.total_seconds() <= 60


async def test_a_failed_database_attempt_is_counted_for_the_alert() -> None:
    engine = create_engine(f"postgresql://nobody@127.0.0.1:{free_port()}/gone")  # nobody listens
    metrics = Metrics()
    records = RecordActivities(NodeRepository(engine), load_settings({}), metrics)
    step = TransitionInput(node_id="n-1", transition=lifecycle.FAILED)
    try:
        for attempt in (1, 2):
            with pytest.raises(DATABASE_ERRORS):
                await ActivityEnvironment().run(records.record_transition, step)
            labels = {"activity": "record_transition"}
            assert metrics.registry.get_sample_value(DATABASE_STEP_FAILURES, labels) == attempt
    finally:
        await engine.dispose()
