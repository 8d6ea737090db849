"""The workflow's table of activities, the real activities and the test fake agree.

The workflow calls activities by name; a renamed method, a changed request type or a fake that
drifted from the real thing would only show at run time. This checks all three against
``workflows.port`` by name and by signature.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

import pytest
from temporalio import activity

from activities.blue_green import BlueGreenActivities
from activities.kube import KubeActivities
from activities.metrics import MetricActivities
from activities.routers.activities import RouterActivities
from activities.webhooks import call_webhook
from tests.workflow.fake_cluster import FakeCluster
from tests.workflow.fake_kube import FakeKube
from workflows import port


def _signatures(functions: list[Callable[..., Any]]) -> dict[str, tuple[Any, Any]]:
    found = {}
    for function in functions:
        definition = activity._Definition.from_callable(function)
        assert definition is not None and definition.name is not None
        hints = typing.get_type_hints(function)
        parameters = [p for p in inspect.signature(function).parameters if p != "self"]
        assert len(parameters) == 1, f"{definition.name} takes one request"
        result = hints.get("return")
        found[definition.name] = (hints[parameters[0]], None if result is type(None) else result)
    return found


def _table() -> dict[str, tuple[Any, Any]]:
    return {a.name: (a.request, a.result) for a in port.ALL}


def test_every_real_activity_is_in_the_table_with_its_types() -> None:
    real = _signatures([*KubeActivities.__new__(KubeActivities).all(), MetricActivities().measure_metric,
                       call_webhook, *RouterActivities.__new__(RouterActivities).all(),
                        *BlueGreenActivities.__new__(BlueGreenActivities).all()])
    assert real == _table()


@pytest.mark.parametrize("fake", [FakeKube, FakeCluster])
def test_the_fakes_answer_to_the_same_names_and_types(fake: type[FakeKube | FakeCluster]) -> None:
    assert _signatures(fake().activities()) == _table()


def test_every_router_activity_is_in_the_router_table_with_its_types() -> None:
    real = _signatures(RouterActivities.__new__(RouterActivities).all())
    assert real == {a.name: (a.request, a.result) for a in port.ROUTER}
    assert len(port.ALL) == len({a.name for a in port.ALL}), "an activity is in the table twice"
