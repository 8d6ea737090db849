"""The job spec refuses what cannot run, naming the field and the reason."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from workflows.policy import canary_replicas_for_weight, effective_weight, resume_index
from workflows.spec import DeliveryRules, JobSpec, PauseStep, SetWeightStep, format_duration

GOOD = """
name: web
namespace: shop
workload: {name: web}
steps:
  - setWeight: 20
  - pause: {duration: 10m}
  - setCanaryScale: {replicas: 2}
  - pause: {}
progressDeadline: 90s
maxPause: 2h
onPauseTimeout: rollback
"""


def _errors(**changes: Any) -> list[tuple[str, str]]:
    spec = {**yaml.safe_load(GOOD), **changes}
    with pytest.raises(ValidationError) as error:
        JobSpec.model_validate(spec)
    return [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in error.value.errors()]


def test_a_good_spec_reads_and_writes_back_the_same() -> None:
    spec = JobSpec.model_validate(yaml.safe_load(GOOD))
    assert spec.progress_deadline == timedelta(seconds=90)
    assert spec.max_pause == timedelta(hours=2)
    dumped = spec.model_dump(mode="json")
    assert dumped["steps"][1] == {"pause": {"duration": "10m", "onTimeout": None}}
    assert dumped["progressDeadline"] == "90s"
    assert JobSpec.model_validate(dumped) == spec


@pytest.mark.parametrize("changes, field, reason", [
    ({"steps": []}, "steps", "at least 1 item"),
    ({"steps": [{"setWeight": 101}]}, "steps.0.setWeight.setWeight", "less than or equal to 100"),
    ({"steps": [{"setWeight": -1}]}, "steps.0.setWeight.setWeight", "greater than or equal to 0"),
    ({"steps": [{"rampUp": 10}]}, "steps", "unknown step 'rampUp'"),
    ({"steps": [{"setWeight": 10, "pause": {}}]}, "steps", "one key"),
    ({"steps": [{"pause": {"duration": "-5m"}}]}, "steps.0.pause.pause.duration", "must not be negative"),
    ({"steps": [{"pause": {"duration": "soon"}}]}, "steps.0.pause.pause.duration", "'soon' is not a duration"),
    ({"steps": [{"pause": {"durration": "5m"}}]}, "steps.0.pause.pause.durration", "Extra inputs"),
    ({"steps": [{"setCanaryScale": {"replicas": 1, "percent": 5}}]}, "steps.0.setCanaryScale.setCanaryScale",
     "exactly one of replicas or percent"),
    ({"progressDeadline": "0s"}, "progressDeadline", "at least 1s"),
    ({"name": "Web_1"}, "name", "should match pattern"),
    ({"workload": {}}, "workload.name", "Field required"),
    ({"workload": {"name": "web", "kind": "StatefulSet"}}, "workload.kind", "'Deployment'"),
    ({"mode": "blueGreen"}, "", "blueGreen: required with mode: blueGreen"),
    ({"mode": "rainbow"}, "mode", "'canary' or 'blueGreen'"),
    ({"onPauseTimeout": "explode"}, "onPauseTimeout", "'continue' or 'rollback'"),
    ({"replicas": 3}, "replicas", "Extra inputs"),
])
def test_invalid_specs_name_the_field_and_the_reason(changes: dict[str, Any], field: str, reason: str) -> None:
    errors = _errors(**changes)
    assert any(loc == field and reason in message for loc, message in errors), errors


def test_rules_can_be_taken_out_and_put_back() -> None:
    spec = JobSpec.model_validate(yaml.safe_load(GOOD))
    rules = DeliveryRules.model_validate({"steps": [{"setWeight": 50}]})
    changed = spec.with_rules(rules)
    assert changed.rules == rules and changed.name == "web" and changed.workload == spec.workload


def test_format_duration_uses_the_largest_exact_unit() -> None:
    assert [format_duration(timedelta(seconds=s)) for s in (0, 45, 600, 5400, 7200, 86400)] == [
        "0s", "45s", "10m", "90m", "2h", "1d"]


@pytest.mark.parametrize("total, weight, expected", [
    (4, 0, 0), (4, 1, 1), (4, 25, 1), (4, 26, 2), (4, 100, 4), (10, 33, 4), (0, 50, 0), (1, 1, 1)])
def test_weight_to_canary_pods_rounds_up(total: int, weight: int, expected: int) -> None:
    assert canary_replicas_for_weight(total, weight) == expected


def test_effective_weight_is_the_share_of_pods() -> None:
    assert effective_weight(1, 3) == 25 and effective_weight(0, 0) == 0 and effective_weight(2, 0) == 100


def test_new_rules_resume_after_the_last_weight_reached() -> None:
    steps = [SetWeightStep(setWeight=10), PauseStep(pause={}), SetWeightStep(setWeight=50), PauseStep(pause={})]
    assert resume_index(steps, 0) == 0
    assert resume_index(steps, 10) == 1
    assert resume_index(steps, 30) == 1
    assert resume_index(steps, 50) == 3
