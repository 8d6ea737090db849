"""The ``setHeaderRoute`` step: Argo Rollouts' shape read as-is, and refused where no router can carry it."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from workflows.header_route import HeaderRoute, apply_header_route
from workflows.spec import JobSpec, SetHeaderRouteStep, describe_step, validation_message

BASE = {"name": "web", "namespace": "shop", "workload": {"name": "web"}}
ISTIO = {"routing": "istio", "stableService": "web-stable", "canaryService": "web-canary",
         "istio": {"virtualService": {"name": "web"}}}
NGINX = {"routing": "nginx", "stableService": "web-stable", "canaryService": "web-canary",
         "nginx": {"stableIngress": "web"}}
BETA = {"setHeaderRoute": {"name": "beta", "match": [
    {"headerName": "X-Canary", "headerValue": {"exact": "yes"}},
    {"headerName": "user-agent", "headerValue": {"regex": "^Mozilla.*Android"}}]}}


def job(steps: list[dict[str, Any]], traffic: dict[str, Any] | None = None) -> JobSpec:
    return JobSpec.model_validate({**BASE, "steps": steps, **({"traffic": traffic} if traffic else {})})


def refused(steps: list[dict[str, Any]], traffic: dict[str, Any] | None = None) -> str:
    with pytest.raises(ValidationError) as error:
        job(steps, traffic)
    return validation_message(error.value)


def test_argo_rollouts_header_route_steps_read_and_describe() -> None:
    spec = job([{"setWeight": 0}, BETA, {"pause": {}}, {"setHeaderRoute": {"name": "beta"}}], ISTIO)
    step = spec.steps[1]
    assert isinstance(step, SetHeaderRouteStep)
    assert [m.header_name for m in step.set_header_route.matches] == ["X-Canary", "user-agent"]
    assert describe_step(step) == "setHeaderRoute beta: X-Canary = yes and user-agent ~ ^Mozilla.*Android"
    assert describe_step(spec.steps[3]) == "setHeaderRoute beta: removed"
    cookie = job([{"setHeaderRoute": {"name": "b", "match": [{"cookieName": "canary"}]}}], NGINX).steps[0]
    assert describe_step(cookie) == "setHeaderRoute b: cookie canary=always"
    assert JobSpec.model_validate(spec.model_dump(mode="json", by_alias=True, exclude_none=True)) == spec


def test_a_later_step_replaces_or_removes_the_route_of_its_name() -> None:
    def route(name: str, value: str | None = None) -> HeaderRoute:
        match = [{"headerName": "x", "headerValue": {"exact": value}}] if value else None
        return HeaderRoute.model_validate({"name": name, "match": match})

    held = apply_header_route([], route("a", "1"))
    held = apply_header_route(held, route("b", "2"))
    held = apply_header_route(held, route("a", "3"))
    assert [(r.name, r.matches[0].header_value.exact if r.matches[0].header_value else None) for r in held] == [
        ("a", "3"), ("b", "2")], "replaced in place: the order the routes are matched in stays"
    assert [r.name for r in apply_header_route(held, route("a"))] == ["b"]
    assert apply_header_route(held, route("c")) == held


@pytest.mark.parametrize("steps, traffic, says", [
    ([{"setWeight": 5}, BETA], None, "steps.1.setHeaderRoute: needs a traffic router"),
    ([{"setHeaderRoute": {"name": "b", "match": [{"headerName": "x", "headerValue": {"exact": "1"}},
                                                 {"cookieName": "c"}]}}], NGINX,
     "steps.0.setHeaderRoute.match: NGINX routes by one header or one cookie"),
    ([{"setHeaderRoute": {"name": "a", "match": [{"cookieName": "c"}]}},
      {"setHeaderRoute": {"name": "b", "match": [{"cookieName": "c"}]}}], NGINX,
     "steps.1.setHeaderRoute.name: NGINX holds one header route at a time"),
    ([{"setHeaderRoute": {"name": "b", "match": [{"headerName": "x"}]}}], ISTIO,
     "steps.0.setHeaderRoute.match.0: give headerName with headerValue (or cookieName)"),
    ([{"setHeaderRoute": {"name": "b", "match": [{"headerName": "x", "headerValue": {"exact": "1", "prefix": "2"}}]}}],
     ISTIO, "give exactly one of exact, prefix or regex"),
    ([{"setHeaderRoute": {"name": "b", "match": [{"headerName": "x", "headerValue": {"regex": "(unclosed"}}]}}],
     ISTIO, "not a regular expression"),
    ([{"setHeaderRoute": {"name": "Beta", "match": [{"cookieName": "c"}]}}], ISTIO,
     "steps.0.setHeaderRoute.name: String should match pattern"),
    ([{"setHeaderRoute": {"name": "b", "match": [{"cookieName": "c"}, {"cookieName": "d"}]}}], ISTIO,
     "at most one cookieName per route"),
])
def test_header_routes_no_router_can_carry_are_refused_naming_the_step(
        steps: list[dict[str, Any]], traffic: dict[str, Any] | None, says: str) -> None:
    assert says in refused(steps, traffic)
