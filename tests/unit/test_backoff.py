"""The backoff formula is defined once (controlplane/backoff.py) and every retry loop uses it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from controlplane.backoff import exponential_backoff
from controlplane.skypilot.retry import RetryPolicy
from workflows.deployment_plan import backoff as deployment_backoff
from workflows.models import DeploymentPolicy

ROOT = Path(__file__).resolve().parents[2]
HOME = ROOT / "controlplane" / "backoff.py"


@pytest.mark.parametrize(
    ("retry", "expected"),
    [(-1, 0.0), (0, 0.0), (1, 5.0), (2, 10.0), (3, 20.0), (4, 40.0), (5, 50.0)],
)
def test_doubles_from_the_first_delay_up_to_the_cap(retry: int, expected: float) -> None:
    assert exponential_backoff(retry, initial_s=5.0, cap_s=50.0) == expected


def test_a_huge_retry_number_is_the_cap_not_an_overflow() -> None:
    assert exponential_backoff(10_000, initial_s=0.2, cap_s=600.0) == 600.0


def test_the_client_retry_and_the_deployment_controller_share_it() -> None:
    client = RetryPolicy(backoff_s=5.0, jitter=0.0)
    policy = DeploymentPolicy(backoff_initial_s=30, backoff_max_s=600)
    for retry in range(1, 12):
        assert client.delay(retry) == exponential_backoff(retry, initial_s=5.0, cap_s=50.0)
        assert deployment_backoff(policy, retry).total_seconds() == exponential_backoff(
            retry, initial_s=30, cap_s=600
        )
    assert deployment_backoff(policy, 0).total_seconds() == 0


def _powers_of_two(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.BinOp)
        and isinstance(node.op, ast.Pow)
        and isinstance(node.left, ast.Constant)
        and node.left.value == 2
    ]


PRODUCT = sorted(
    path
    for top in ("controlplane", "activities", "workflows", "starter", "devtools")
    for path in (ROOT / top).rglob("*.py")
    if path != HOME
)


@pytest.mark.parametrize("path", PRODUCT, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_other_exponential_backoff(path: Path) -> None:
    assert _powers_of_two(path) == [], "use controlplane.backoff.exponential_backoff"
