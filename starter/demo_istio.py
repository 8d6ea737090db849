"""``make demo-istio``: the demo's release, routed through an Istio VirtualService.

Like ``make demo`` (same dev environment, same sample app, in namespace ``demo-istio``), but
the job sets exact weights on the user's VirtualService instead of counting pods. The local
cluster serves Istio's real CRDs and no data plane runs; the dev environment's simulated mesh
follows the VirtualService's weights, so Prometheus sees the canary get 10 % of the requests
with one pod beside four. At each step the demo prints the weights the VirtualService holds
(read from the API server, not from the job), the share of requests the canary received
(from Prometheus, at the manual gate), then shows a version answering 20 % errors judged on
its 10 % and the route put back to 100 % stable.

The dev environment is reached through :mod:`starter.demo` (its ``DevState`` and ``run_demo``),
the one starter module allowed to import the dev tooling; the set-up both demos share lives there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from kubernetes import client as k8s

from starter import client as canary
from starter.demo import (
    APP,
    ERROR_RATE_ANNOTATION,
    DevState,
    deploy_sample_app,
    run_demo,
    say,
    say_where_to_look,
    start_over,
    step_and_time_left,
    success_rate_analysis,
)
from workflows import names
from workflows.models import JobDetails, OperationRequest, Phase
from workflows.spec import JobSpec

NAMESPACE = "demo-istio"
STABLE, CANARY = f"{APP}-stable", f"{APP}-canary"
GROUP, VERSION, PLURAL = "networking.istio.io", "v1", "virtualservices"
ACTOR = "demo"
ANALYSIS = success_rate_analysis(NAMESPACE)
JOB = JobSpec.model_validate({
    "name": APP, "namespace": NAMESPACE, "workload": {"name": APP},
    "steps": [{"setWeight": 10}, {"analysis": {"templates": [{"templateName": "success-rate"}]}},
              {"setWeight": 50}, {"pause": {}}, {"setWeight": 80}, {"pause": {"duration": "5s"}}],
    "analysis": ANALYSIS,
    "traffic": {"routing": "istio", "stableService": STABLE, "canaryService": CANARY,
                "istio": {"virtualService": {"name": APP, "routes": ["primary"]}}},
    "progressDeadline": "2m",
})
GATE = 3  # the manual gate's step index (0-based), at 50 %
WINDOW_SECONDS = 10
WINDOW = f"{WINDOW_SECONDS}s"


def create_virtual_service(api: k8s.ApiClient) -> None:
    """The user's VirtualService: clients call the app's Service; its route sends all to stable."""
    k8s.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "VirtualService", "metadata": {"name": APP},
        "spec": {"hosts": [APP], "http": [{"name": "primary", "route": [
            {"destination": {"host": STABLE, "port": {"number": 80}}, "weight": 100},
            {"destination": {"host": CANARY, "port": {"number": 80}}, "weight": 0}]}]}})
    say(f"==> kubectl apply: VirtualService {NAMESPACE}/{APP} (host {APP}; route primary: {STABLE} 100, {CANARY} 0)")


def held_weights(api: k8s.ApiClient) -> str:
    """The route's weights as the API server holds them, e.g. ``primary: stable 90 / canary 10``."""
    obj = k8s.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, APP)
    parts = []
    for route in obj["spec"]["http"]:
        weights = {d["destination"]["host"]: d.get("weight", 0) for d in route["route"]}
        parts.append(f"{route.get('name', '?')}: stable {weights.get(STABLE, 0)} / canary {weights.get(CANARY, 0)}")
    return "; ".join(parts)


def canary_share(prometheus: str | None) -> str:
    """The canary Service's share of the route's requests over the last window, as Prometheus saw them."""
    if not prometheus:
        return "no Prometheus in this dev environment"
    from activities.metrics.prometheus import query

    selector = f'destination_service_namespace="{NAMESPACE}"'
    try:
        canary_rate = query(prometheus, f'sum(rate(istio_requests_total{{{selector}, '
                                        f'destination_service_name="{CANARY}"}}[{WINDOW}]))')
        total = query(prometheus, f'sum(rate(istio_requests_total{{{selector}, '
                                  f'destination_service_name=~"{STABLE}|{CANARY}"}}[{WINDOW}]))')
    except Exception as error:  # the demo goes on without the figure
        return f"Prometheus did not answer ({error})"
    if not total:
        return "no requests seen yet"
    return f"{100 * (canary_rate or 0) / total:.0f} % of the requests went to {CANARY}"


def describe(details: JobDetails, api: k8s.ApiClient) -> tuple[str, str]:
    """(what changed, the full line): phase, step, the VirtualService's weights, the pods."""
    step, remaining = step_and_time_left(details)
    key = f"    {details.phase.value:<10}{step} | VirtualService {held_weights(api)}"
    return key, f"{key} ({details.canary_replicas} canary pods beside {details.replicas} stable){remaining}"


async def follow(temporal: Any, api: k8s.ApiClient, until: Callable[[JobDetails], bool],
                 timeout: float = 180) -> JobDetails:
    """Print a line whenever the phase, the step or the VirtualService's weights change, until ``until``."""
    last = ""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        details = await canary.details(temporal, NAMESPACE, APP)
        key, line = await asyncio.to_thread(describe, details, api)
        if key != last:
            say(line)
        last = key
        if until(details):
            return details
        if asyncio.get_running_loop().time() > deadline:
            raise SystemExit("demo: the job did not get there in time")
        await asyncio.sleep(0.5)


def set_image(api: k8s.ApiClient, image: str, annotations: dict[str, str] | None = None) -> None:
    """What ``kubectl set image`` (and an annotation for the simulated mesh) does to the pod template."""
    template: dict[str, Any] = {"spec": {"containers": [{"name": "web", "image": image}]}}
    if annotations:
        template["metadata"] = {"annotations": annotations}
    k8s.AppsV1Api(api).patch_namespaced_deployment(APP, NAMESPACE, {"spec": {"template": template}})


async def play(temporal: Any, api: k8s.ApiClient, state: DevState) -> None:
    """The operator's moves: attach through the router, a release to promotion, a bad one rolled back."""
    prometheus = state.prometheus_address
    await start_over(temporal, NAMESPACE)
    deploy_sample_app(api, NAMESPACE)
    create_virtual_service(api)

    say(f"==> canaryctl apply: job {NAMESPACE}/{APP}, traffic.routing: istio (the job creates {STABLE} and {CANARY})")
    say("    " + (await canary.apply_job(temporal, JOB, actor=ACTOR)).message)
    await follow(temporal, api, lambda d: d.phase == Phase.HEALTHY and bool(d.routes))

    say(f"==> kubectl set image deployment/{APP} web=registry.local/shop-web:2.0  (a release starts)")
    set_image(api, "registry.local/shop-web:2.0")
    gate = await follow(temporal, api, lambda d: d.phase == Phase.PAUSED and d.current_step == GATE)
    for run in gate.analyses:
        say(f"    analysis at step {(run.step or 0) + 1}: {run.phase.value}: {run.reason}")
    await asyncio.sleep(WINDOW_SECONDS + 2)  # a whole rate window at the gate's weight
    say(f"    the simulated mesh over the last {WINDOW}: {canary_share(prometheus)} "
        f"({gate.canary_replicas} of {gate.canary_replicas + gate.replicas} pods are canary pods)")

    say("==> canaryctl continue: past the manual gate at 50 %")
    result = await canary.operate(temporal, NAMESPACE, APP, names.CONTINUE, OperationRequest(actor=ACTOR))
    say(f"    {result.message}")
    promoted = await follow(temporal, api, lambda d: d.phase == Phase.HEALTHY and d.canary is None)
    assert promoted.stable is not None
    say(f"==> promoted: revision {promoted.stable.revision} {promoted.stable.images} is stable; "
        f"VirtualService {held_weights(api)}")

    say("==> kubectl set image ...:3.0, a version that answers 20 % of its requests with 500s")
    set_image(api, "registry.local/shop-web:3.0", {ERROR_RATE_ANNOTATION: "0.2"})
    failed = await follow(temporal, api, lambda d: d.phase == Phase.FAILED)
    say(f"==> judged on its 10 % and rolled back: {failed.last_error}")
    say(f"    VirtualService {held_weights(api)}")


def print_where_to_look(state: DevState) -> None:
    """Where the routed job can be seen now that the demo is over."""
    say_where_to_look(state, NAMESPACE)
    if state.api_url:
        say(f"  web page:       {state.api_url}/ui/namespaces/{NAMESPACE}/jobs/{APP}  (router and route weights)")
    say(f"  job details:    .venv/bin/canaryctl get {APP} -n {NAMESPACE}")
    say(f"  the route:      kubectl -n {NAMESPACE} get virtualservice {APP} -o yaml  (KUBECONFIG={state.kubeconfig})")
    say("  stop it all:    .venv/bin/canaryctl dev down")


def main() -> None:
    """Entry point of ``make demo-istio`` / ``python -m starter.demo_istio``."""
    run_demo(play, print_where_to_look)


if __name__ == "__main__":
    main()
