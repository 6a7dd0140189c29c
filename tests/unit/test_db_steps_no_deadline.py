"""Database steps retry until Postgres answers: no total deadline (issue 10, path 2).

A guard on the options, standing in while the workflow-level test
(tests/workflows/test_leakproof.py::test_database_outage_longer_than_the_old_deadline_does_not_fail_the_node)
is skipped: the steps are local activities now, whose retry backoff (at most 30 s, below the
SDK's one-minute local-retry threshold) runs in real time, not in the test server's skipped time.
Before the fix the steps had a 15-minute schedule-to-close, after which the workflow failed with
its row live and its cluster running.
"""

from __future__ import annotations

from temporalio.common import RetryPolicy

from workflows.node import DB_OPTIONS


def test_database_steps_have_no_total_deadline_and_no_attempt_limit() -> None:
    assert "schedule_to_close_timeout" not in DB_OPTIONS
    policy = DB_OPTIONS["retry_policy"]
    assert isinstance(policy, RetryPolicy)
    assert policy.maximum_attempts == 0  # unlimited
    # A failing attempt is bounded, so each retry can see Postgres come back.
    assert DB_OPTIONS["start_to_close_timeout"].total_seconds() <= 60
