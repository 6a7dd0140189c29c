"""`python -m starter update`: progress lines while the rollout goes, and its exit code."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import timedelta

import pytest

from starter import update_cli
from workflows.models import DeploymentView, RolloutView, UpdateDeploymentRequest


def view(phase: str, new_ready: int, reason: str | None = None) -> DeploymentView:
    return DeploymentView(
        name="blue",
        tenant="acme",
        desired_replicas=2,
        terminating=False,
        replicas=[],
        serving_replicas=2,
        revision=1 if phase != "rolled_back" else 0,
        rollout=RolloutView(
            revision=1,
            phase=phase,
            old_replicas=2 - new_ready,
            new_replicas=new_ready,
            new_ready=new_ready,
            reason=reason,
        ),
    )


class FakeControl:
    def __init__(self, views: list[DeploymentView]) -> None:
        self.views = views
        self.requests: list[UpdateDeploymentRequest] = []

    async def update_deployment(
        self, workflow_id: str, request: UpdateDeploymentRequest
    ) -> DeploymentView:
        self.requests.append(request)
        return self.views[0]

    async def wait_for_rollout(
        self,
        workflow_id: str,
        *,
        timeout: timedelta,
        on_progress: Callable[[DeploymentView], None] | None = None,
    ) -> DeploymentView:
        for current in self.views[1:]:
            assert on_progress is not None
            on_progress(current)
        return self.views[-1]


def args(*extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    update_cli.add_command(parser.add_subparsers(dest="command"))
    return parser.parse_args(["update", "--workflow-id", "deployment-acme-blue", *extra])


@pytest.mark.parametrize(
    ("final", "code"),
    [
        (view("done", 2), update_cli.EXIT_DONE),
        (view("rolled_back", 0, "crash-loop guard tripped"), update_cli.EXIT_ROLLED_BACK),
        (view("rolling", 1), update_cli.EXIT_STILL_ROLLING),
    ],
)
async def test_update_prints_progress_and_exits_by_outcome(
    final: DeploymentView, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    parsed = args("--model", "org/new", "--max-surge", "1")
    request = update_cli.request(parsed, lambda gpu: ("H100", 1))
    control = FakeControl([view("rolling", 0), view("rolling", 1), view("rolling", 1), final])
    assert await update_cli.run(control, parsed, request) == code  # type: ignore[arg-type]
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["phase"] == "rolling"
    assert [line["new_ready"] for line in lines[:2]] == [0, 1]  # repeats are not printed
    assert lines[-1]["phase"] == final.rollout.phase if final.rollout else False
    assert control.requests[0].model == "org/new"
    assert control.requests[0].max_surge == 1
