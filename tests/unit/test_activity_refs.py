"""The promise of workflows/activity_refs.py: every activity a workflow calls is registered by
the worker under that name, with the same model in and out.

A mismatch would only show at run time, as an activity task no worker knows or a payload that
fails to decode, so it is checked here against the implementations themselves.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any

import pytest
from temporalio import activity, workflow

from activities.recovery import TEARDOWN_SIGNAL
from worker import IMPLEMENTATIONS, Activities
from workflows import activity_refs as acts
from workflows.node import NodeWorkflow

REFS: list[acts.ActivityRef[Any, Any]] = list(acts.ALL)


def test_every_reference_has_exactly_one_implementation() -> None:
    assert len({ref.name for ref in REFS}) == len(REFS), "two references share a name"
    assert set(IMPLEMENTATIONS) == set(REFS)
    assert len(set(IMPLEMENTATIONS.values())) == len(IMPLEMENTATIONS)


def test_every_reference_in_the_module_is_listed_in_all() -> None:
    defined = {v for v in vars(acts).values() if isinstance(v, acts.ActivityRef)}
    assert defined == set(REFS)


@pytest.mark.parametrize("ref", REFS, ids=[ref.name for ref in REFS])
def test_the_implementation_is_registered_under_the_references_name(
    ref: acts.ActivityRef[Any, Any],
) -> None:
    definition = activity._Definition.must_from_callable(IMPLEMENTATIONS[ref])
    assert definition.name == ref.name


@pytest.mark.parametrize("ref", REFS, ids=[ref.name for ref in REFS])
def test_the_implementation_takes_and_returns_the_references_models(
    ref: acts.ActivityRef[Any, Any],
) -> None:
    implementation = IMPLEMENTATIONS[ref]
    hints = typing.get_type_hints(implementation)
    parameters = [p for p in inspect.signature(implementation).parameters if p != "self"]
    assert len(parameters) == 1, f"one model in: {parameters}"
    assert hints[parameters[0]] is ref.input_type
    assert hints["return"] is ref.result_type


def test_the_worker_registers_every_reference_and_nothing_else() -> None:
    hints = typing.get_type_hints(Activities)
    holders = {f.name: object.__new__(hints[f.name]) for f in dataclasses.fields(Activities)}
    registered = Activities(**holders).all()
    names = [activity._Definition.must_from_callable(fn).name for fn in registered]
    assert names == [ref.name for ref in REFS]
    for fn in registered:
        assert inspect.ismethod(fn), fn  # bound to the worker's instance


def test_the_recovery_start_signal_is_node_workflows_terminate_signal() -> None:
    signals = workflow._Definition.must_from_class(NodeWorkflow).signals
    assert signals[TEARDOWN_SIGNAL].fn is NodeWorkflow.request_terminate
