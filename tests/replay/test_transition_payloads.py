"""The transition activity still accepts what the committed histories' workflows scheduled.

Those runs sent ``to_status``, ``event_type`` and ``allowed_from``: an activity they scheduled
before a deploy runs on today's worker, whose input is a named transition.
"""

from __future__ import annotations

import json

from temporalio.contrib.pydantic import pydantic_data_converter

from tests.replay.test_replay import FILES, load
from workflows.models import TransitionInput


def test_every_scheduled_transition_in_the_histories_is_a_named_transition() -> None:
    scheduled = [
        event.activity_task_scheduled_event_attributes.input.payloads[0]
        for path in FILES
        for event in load(path)[1].events
        if event.activity_task_scheduled_event_attributes.activity_type.name == "record_transition"
    ]
    assert len(scheduled) > 20
    for payload in scheduled:
        old = json.loads(payload.data)
        [parsed] = pydantic_data_converter.payload_converter.from_payloads(
            [payload], [TransitionInput]
        )
        assert isinstance(parsed, TransitionInput)
        assert (parsed.transition.target, parsed.transition.event) == (
            old["to_status"],
            old["event_type"],
        )
        assert set(old["allowed_from"]) <= parsed.transition.allowed_from
