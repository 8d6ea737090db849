"""``make demo``: a canary release end to end on the embedded defaults.

Starts (or reuses) the dev environment of ``canaryctl dev up`` — Temporal dev server with its
UI, the local Kubernetes cluster, a worker — then plays what an operator does: deploy a
sample app, attach a canary job, change the image, watch the steps, continue at the manual
gate, see the promotion after the canary's analysis passed, watch a version that serves 5 %
errors caught by its analysis (a real Prometheus scraping the simulated mesh) and rolled back
by itself, and roll back to the first version. Everything stays up
afterwards so the job can be looked at in the Temporal UI and with ``canaryctl``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from devenv import cli as dev
from devenv.cli import DevState as DevState  # re-exported for starter.demo_istio
from starter import client as canary
from starter import lifecycle
from starter.render import pause_left
from workflows import names
from workflows.models import JobDetails, OperationRequest, Phase, RollbackRequest
from workflows.spec import JobSpec, older_workflow_ids, workflow_id

NAMESPACE = "demo"
APP = "shop-web"


def success_rate_analysis(namespace: str) -> dict[str, Any]:
    """The canary's success rate, from the mesh's request metrics, judged twice (both demos' analysis)."""
    return {"templates": [{"name": "success-rate", "metrics": [{
        "name": "success-rate", "interval": "5s", "count": 2, "initialDelay": "10s",
        "successCondition": "result >= 0.98",
        "provider": {"builtin": {"check": "request-success-rate", "workload": APP, "namespace": namespace,
                                 "window": "10s"}},
    }]}]}


# The analysis step judges it at 50 % of the traffic.
ANALYSIS = success_rate_analysis(NAMESPACE)
JOB = JobSpec.model_validate({
    "name": APP, "namespace": NAMESPACE, "workload": {"name": APP},
    "steps": [{"setWeight": 25}, {"pause": {"duration": "5s"}}, {"setWeight": 50},
              {"analysis": {"templates": [{"templateName": "success-rate"}]}}, {"pause": {}},
              {"setWeight": 75}, {"pause": {"duration": "5s"}}],
    "analysis": ANALYSIS,
    "progressDeadline": "2m",
})
GATE = 4  # the step index of the manual gate (0-based)
ERROR_RATE_ANNOTATION = "canary-delivery.dev/simulate-error-rate"
ACTOR = "demo"


def say(text: str) -> None:
    """Print a line at once: the demo is watched live."""
    print(text, flush=True)


def run_demo(play: Callable[[Any, k8s.ApiClient, DevState], Awaitable[None]],
             where_to_look: Callable[[DevState], None]) -> None:
    """A demo's entry point: the dev environment up, ``play`` against it, then ``where_to_look``.

    Both demos start the same way from the repository's root, so ``.venv/bin`` paths they print hold.
    """
    os.chdir(Path(__file__).resolve().parents[1])
    state = dev_up()
    lifecycle.run(run(state, play, where_to_look))


async def run(state: DevState, play: Callable[[Any, k8s.ApiClient, DevState], Awaitable[None]],
              where_to_look: Callable[[DevState], None]) -> None:
    """Play the operator's part against the running dev environment."""
    temporal = await canary.connect(state.temporal_address, state.temporal_namespace)
    with k8s_config.new_client_from_config(config_file=state.kubeconfig) as api:
        await play(temporal, api, state)
    where_to_look(state)


async def start_over(temporal: Any, namespace: str) -> None:
    """End a job left over from an earlier demo run (by this version or an older one).

    It must not outlive its namespace, which the demo makes anew.
    """
    for leftover in (workflow_id(namespace, APP), *older_workflow_ids(namespace, APP)):
        try:
            await temporal.get_workflow_handle(leftover).terminate("demo starts over")
        except Exception:
            pass


def dev_up() -> DevState:
    """Start the embedded defaults unless they already run; return where they are."""
    state = dev.running_state()
    if state is None:
        say("==> starting the embedded defaults: Temporal dev server + UI, local Kubernetes cluster, worker")
        result = subprocess.run([sys.executable, "-m", "starter.cli", "dev", "up"], text=True)
        if result.returncode != 0:
            raise SystemExit("demo: `canaryctl dev up` failed (see above)")
        state = dev.running_state()
    if state is None:
        raise SystemExit("demo: the dev environment did not report its addresses")
    return state


def deploy_sample_app(api: k8s.ApiClient, namespace: str = NAMESPACE) -> None:
    """A fresh namespace with a 4-replica Deployment and the Service in front of it."""
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    if any(ns.metadata.name == namespace for ns in core.list_namespace().items):
        core.delete_namespace(namespace)
        wait(lambda: not any(ns.metadata.name == namespace for ns in core.list_namespace().items),
             "the previous demo namespace to go away", timeout=120)
    core.create_namespace({"metadata": {"name": namespace}})
    labels = {"app": APP}
    apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": APP, "labels": labels},
        "spec": {"replicas": 4, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "web", "image": "registry.local/shop-web:1.0"}]}}},
    })
    core.create_namespaced_service(namespace, {
        "metadata": {"name": APP},
        "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]},
    })
    wait(lambda: (apps.read_namespaced_deployment_status(APP, namespace).status.available_replicas or 0) == 4,
         "the sample app to be available")
    say(f"==> deployed {namespace}/{APP}: 4 pods of registry.local/shop-web:1.0 behind Service {APP}")


def wait(check: Callable[[], Any], what: str, timeout: float = 60) -> None:
    """Poll ``check`` until it holds; give up with a one-line reason."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: timed out waiting for {what}")
        time.sleep(0.3)


def step_and_time_left(details: JobDetails) -> tuple[str, str]:
    """The parts of a progress line about the step: the one running, and a pause's time left."""
    step = ""
    if details.current_step is not None and details.steps:
        current = details.steps[details.current_step]
        step = f" step {details.current_step + 1}/{len(details.steps)} {current.description} ({current.status.value})"
    left = pause_left(details, datetime.now(UTC))
    return step, f", {int(left.total_seconds())}s left" if left is not None else ""


def describe(details: JobDetails) -> str:
    """One progress line: phase, weight, the step running, the canary version."""
    step, remaining = step_and_time_left(details)
    canary_image = f" canary={details.canary.images} rev {details.canary.revision}" if details.canary else ""
    return (f"    {details.phase.value:<12} weight {details.weight:>3}% "
            f"({details.canary_replicas} canary pods){step}{remaining}{canary_image}")


async def follow(temporal: Any, until: Callable[[JobDetails], bool], timeout: float = 180) -> JobDetails:
    """Print each change of the job's progress until ``until`` holds."""
    last = ""
    deadline = time.monotonic() + timeout
    while True:
        details = await canary.details(temporal, NAMESPACE, APP)
        line = describe(details)
        if line.split(", ")[0] != last.split(", ")[0]:
            say(line)
        last = line
        if until(details):
            return details
        if time.monotonic() > deadline:
            raise SystemExit("demo: the job did not get there in time")
        await asyncio.sleep(0.5)


async def play(temporal: Any, api: k8s.ApiClient, state: DevState) -> None:
    """The operator's moves, from a fresh sample app to a rollback."""
    apps = k8s.AppsV1Api(api)
    await start_over(temporal, NAMESPACE)
    deploy_sample_app(api)

    say(f"==> canaryctl apply: attaching canary job {NAMESPACE}/{APP}")
    say("    " + (await canary.apply_job(temporal, JOB, actor=ACTOR)).message)
    attached = await follow(temporal, lambda d: d.phase == Phase.HEALTHY)
    assert attached.stable is not None
    say(f"    stable: revision {attached.stable.revision} {attached.stable.images}")

    say("==> kubectl set image deployment/shop-web web=registry.local/shop-web:2.0  (a new release starts)")
    apps.patch_namespaced_deployment(APP, NAMESPACE, {"spec": {"template": {"spec": {
        "containers": [{"name": "web", "image": "registry.local/shop-web:2.0"}]}}}})
    gate = await follow(temporal, lambda d: d.phase == Phase.PAUSED and d.current_step == GATE)
    for run in gate.analyses:
        say(f"    analysis at step {(run.step or 0) + 1}: {run.phase.value}: {run.reason}")

    say("==> canaryctl continue: the manual gate at 50 % is passed")
    result = await canary.operate(temporal, NAMESPACE, APP, names.CONTINUE, OperationRequest(actor=ACTOR))
    say(f"    {result.message}")
    promoted = await follow(temporal, lambda d: d.phase == Phase.HEALTHY and d.canary is None)
    assert promoted.stable is not None
    say(f"==> promoted: revision {promoted.stable.revision} {promoted.stable.images} is stable")

    say("==> kubectl set image ...:3.0, a version that answers 5 % of its requests with 500s")
    apps.patch_namespaced_deployment(APP, NAMESPACE, {"spec": {"template": {
        "metadata": {"annotations": {ERROR_RATE_ANNOTATION: "0.05"}},
        "spec": {"containers": [{"name": "web", "image": "registry.local/shop-web:3.0"}]}}}})
    failed = await follow(temporal, lambda d: d.phase == Phase.FAILED)
    say(f"==> caught by analysis and rolled back by the job itself: {failed.last_error}")

    say("==> canaryctl rollback --to-revision 1 --skip-steps: back to the previous version, at once")
    await canary.operate(temporal, NAMESPACE, APP, names.ROLLBACK,
                         RollbackRequest(revision=1, skip_steps=True, actor=ACTOR))
    back = await follow(temporal, lambda d: d.phase == Phase.HEALTHY and d.stable is not None
                        and d.stable.revision == 4)
    assert back.stable is not None
    say(f"==> rolled back: revision {back.stable.revision} {back.stable.images} is stable")

    versions = await canary.versions(temporal, NAMESPACE, APP)
    say("==> history:")
    for version in versions.history:
        say(f"    rev {version.revision:<3} {version.outcome.value if version.outcome else '':<11} "
            f"{version.trigger.value:<15} {version.images}")


def say_where_to_look(state: DevState, namespace: str) -> None:
    """The start of both demos' closing lines: the job's workflow in the Temporal UI."""
    say("")
    say("Where to look now:")
    ui_id = urllib.parse.quote(workflow_id(namespace, APP), safe="")
    say(f"  Temporal UI:    {state.ui_url}/namespaces/{state.temporal_namespace}/workflows/{ui_id}")


def print_where_to_look(state: DevState) -> None:
    """Where the job can be seen now that the demo is over."""
    say_where_to_look(state, NAMESPACE)
    if state.api_url:
        say(f"  web page:       {state.api_url}/ui/namespaces/{NAMESPACE}/jobs/{APP}  (sign in with the admin token in "
            f"{state.api_tokens_file})")
    say(f"  job details:    .venv/bin/canaryctl get {APP} -n {NAMESPACE}")
    say(f"  job history:    .venv/bin/canaryctl history {APP} -n {NAMESPACE}")
    say("  find jobs:      .venv/bin/temporal workflow list --query \"CanaryPhase='healthy'\"")
    say(f"  the cluster:    export KUBECONFIG={state.kubeconfig}")
    say("  stop it all:    .venv/bin/canaryctl dev down")


def main() -> None:
    """Entry point of ``make demo`` / ``python -m starter.demo``."""
    run_demo(play, print_where_to_look)


if __name__ == "__main__":
    main()
