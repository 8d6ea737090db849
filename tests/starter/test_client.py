"""starter.client and canaryctl against a real dev server and a stand-in job workflow.

The stand-in speaks the job workflow's protocol (names, models, a validator) with trivial
behaviour, so these tests pin down the client side whatever the real workflow does.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio
from temporalio import workflow
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from starter import client as api
from starter.cli import os_user
from starter.errors import CanaryError, Conflict, JobEnded, JobNotFound, Unavailable
from tests.temporal_envs import local_env
from workflows import names, search
from workflows.models import (
    CanaryJobInput,
    JobDetails,
    JobVersions,
    OperationRequest,
    OperationResult,
    Phase,
    RollbackRequest,
    StepState,
    Trigger,
    UpdateRulesRequest,
    UpdateVersionRequest,
    Version,
)
from workflows.spec import JobSpec, describe_step, legacy_workflow_id, slash_workflow_id, workflow_id

T = TypeVar("T")
CANARYCTL = Path(sys.executable).with_name("canaryctl")


@workflow.defn(name=names.WORKFLOW_TYPE)
class StandInJob:
    @workflow.init
    def __init__(self, input: CanaryJobInput) -> None:
        self.job = input.job
        self.phase = Phase.PAUSED
        self.image = "nginx:1"
        self.step = 0  # index of the step the release is at
        self.ops: list[tuple[str, OperationRequest]] = []

    @workflow.run
    async def run(self, input: CanaryJobInput) -> str:
        self._set_phase(self.phase)  # an update may have run before this, in the first task
        await workflow.wait_condition(lambda: self.phase == Phase.DELETED)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return "deleted"

    def _set_phase(self, phase: Phase) -> None:
        self.phase = phase
        workflow.upsert_search_attributes([search.CANARY_PHASE.value_set(phase.value)])

    def _done(self, operation: str, request: OperationRequest, message: str) -> OperationResult:
        self.ops.append((operation, request))
        return OperationResult(message=f"{message} by {request.actor}", phase=self.phase)

    @workflow.update(name=names.UPDATE_VERSION)
    def update_version(self, request: UpdateVersionRequest) -> OperationResult:
        self.image = request.image
        self._set_phase(Phase.PROGRESSING)
        return self._done(names.UPDATE_VERSION, request, f"delivering {request.image}")

    @update_version.validator
    def _check_version(self, request: UpdateVersionRequest) -> None:
        if request.image == self.image:
            raise ValueError(f"{request.image} is already the current image")

    @workflow.update(name=names.PROMOTE)
    def promote(self, request: OperationRequest) -> OperationResult:
        self._set_phase(Phase.HEALTHY)
        return self._done(names.PROMOTE, request, "promoted")

    @workflow.update(name=names.CONTINUE)
    def continue_(self, request: OperationRequest) -> OperationResult:
        self.step += 1
        self._set_phase(Phase.PROGRESSING)
        return self._done(names.CONTINUE, request, "continuing")

    @continue_.validator
    def _check_gate(self, request: OperationRequest) -> None:
        # The real job's rule: a continue names the gate it means, or the one it waits at now.
        if self.phase != Phase.PAUSED:
            raise ApplicationError(f"nothing to continue: the job is {self.phase.value}, not paused",
                                   type="OperationNotAllowed")
        if (request.release, request.step) not in ((None, None), (2, self.step + 1)):
            raise ApplicationError(f"release {request.release} step {request.step} is not current "
                                   f"(release 2, step {self.step + 1})", type="OperationNotAllowed")

    @workflow.update(name=names.TERMINATE)
    def terminate(self, request: OperationRequest) -> OperationResult:
        return self._done(names.TERMINATE, request, f"terminating ({request.reason})")

    @workflow.update(name=names.ROLLBACK)
    def rollback(self, request: RollbackRequest) -> OperationResult:
        return self._done(names.ROLLBACK, request, f"rolling back to {request.revision} "
                                                   f"skip={request.skip_steps}")

    @workflow.update(name=names.UPDATE_RULES)
    def update_rules(self, request: UpdateRulesRequest) -> OperationResult:
        merged = JobSpec.model_validate({**self.job.model_dump(), **request.rules})
        self.job = self.job.with_rules(merged.rules)
        result = self._done(names.UPDATE_RULES, request, f"{len(self.job.steps)} steps")
        self.step = 0  # the release starts over under the new rules, at its first gate
        self._set_phase(Phase.PAUSED)
        return result

    @workflow.update(name=names.DELETE)
    def delete(self, request: OperationRequest) -> OperationResult:
        self._set_phase(Phase.DELETED)
        return self._done(names.DELETE, request, "deleting")

    def _version(self) -> Version:
        return Version(revision=1, template_hash="abc123", images={"app": self.image}, trigger=Trigger.ATTACH,
                       started=workflow.now())

    @workflow.query(name=names.DETAILS_QUERY)
    def details(self) -> JobDetails:
        return JobDetails(
            name=self.job.name, namespace=self.job.namespace, workload=self.job.workload.name,
            mode=self.job.mode.value, phase=self.phase, replicas=4, weight=25, actual_weight=25,
            canary_replicas=1,
            current_step=self.step, steps=[StepState(index=i, description=describe_step(s))
                                   for i, s in enumerate(self.job.steps)],
            last_error=None, stable=self._version(),
            canary=self._version().model_copy(update={"revision": 2}) if self.phase != Phase.HEALTHY else None,
            rules=self.job.rules.model_dump(mode="json"), events=[])

    @workflow.query(name=names.VERSIONS_QUERY)
    def versions(self) -> JobVersions:
        return JobVersions(stable=self._version(), canary=None, history=[self._version()])

    @workflow.query
    def operations(self) -> list[dict[str, Any]]:
        return [{"operation": op, **request.model_dump(mode="json")} for op, request in self.ops]


@pytest_asyncio.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with await local_env() as environment:
        async with Worker(environment.client, task_queue=names.TASK_QUEUE, workflows=[StandInJob],
                          workflow_runner=UnsandboxedWorkflowRunner()):
            yield environment


@pytest.fixture
def address(env: WorkflowEnvironment) -> str:
    return str(env.client.service_client.config.target_host)


def job(name: str | None = None, namespace: str = "shop", workload: str = "web") -> JobSpec:
    return JobSpec.model_validate({
        "name": name or f"j{uuid.uuid4().hex[:8]}", "namespace": namespace, "workload": {"name": workload},
        "steps": [{"setWeight": 25}, {"pause": {}}]})


async def eventually(probe: Callable[[], Awaitable[T]], timeout: float = 15.0) -> T:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.2)


async def operations(client: Client, spec: JobSpec, legacy: bool = False,
                     id_for: Callable[[str, str], str] = legacy_workflow_id) -> list[dict[str, Any]]:
    make_id = id_for if legacy else workflow_id
    handle = client.get_workflow_handle(make_id(spec.namespace, spec.name))
    result: list[dict[str, Any]] = await handle.query("operations")
    return result


async def test_connect_uses_environment_and_pydantic(address: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", address)
    client = await api.connect()
    assert client.service_client.config.target_host == address
    assert client.namespace == "default"
    assert client.data_converter.payload_converter_class.__name__ == "PydanticPayloadConverter"


async def test_an_unknown_temporal_namespace_is_named(address: str) -> None:
    client = await api.connect(address, "no-such-namespace")
    with pytest.raises(Unavailable, match=f"^Temporal namespace 'no-such-namespace' not found at {address}$"):
        await api.details(client, "shop", "web")


async def test_apply_creates_then_configures(env: WorkflowEnvironment) -> None:
    client, spec = env.client, job()
    created = await api.apply_job(client, spec)
    assert created == api.Applied(created=True, message=f"canary job shop/{spec.name} created")
    description = await client.get_workflow_handle(workflow_id("shop", spec.name)).describe()
    assert description.task_queue == names.TASK_QUEUE
    assert description.typed_search_attributes.get(search.CANARY_JOB) == spec.name
    assert description.typed_search_attributes.get(search.CANARY_NAMESPACE) == "shop"
    assert description.typed_search_attributes.get(search.CANARY_WORKLOAD) == "web"

    changed = spec.with_rules(job().rules.model_copy(update={"steps": job().steps[:1]}))
    applied = await api.apply_job(client, changed, actor="bob")
    assert applied == api.Applied(created=False, message=f"canary job shop/{spec.name} configured: 1 steps by bob")
    [op] = await operations(client, spec)
    assert op["operation"] == names.UPDATE_RULES and op["actor"] == "bob"
    assert op["rules"]["steps"] == [{"setWeight": 25}]
    assert op["rules"]["onPauseTimeout"] == "continue"  # aliases on the wire

    details = await api.details(client, "shop", spec.name)
    assert [s.description for s in details.steps] == ["setWeight 25%"]


async def test_apply_refuses_another_workload(env: WorkflowEnvironment) -> None:
    spec = job()
    await api.apply_job(env.client, spec)
    with pytest.raises(CanaryError, match=f"shop/{spec.name} delivers Deployment web, not api"):
        await api.apply_job(env.client, job(spec.name, workload="api"))


async def test_apply_restarts_an_ended_job(env: WorkflowEnvironment) -> None:
    spec = job()
    await api.apply_job(env.client, spec)
    await api.operate(env.client, "shop", spec.name, names.DELETE, OperationRequest())
    await asyncio.wait_for(env.client.get_workflow_handle(workflow_id("shop", spec.name)).result(), 30)
    assert (await api.apply_job(env.client, spec)).created


async def test_queries_operations_and_errors(env: WorkflowEnvironment) -> None:
    client, spec = env.client, job()
    await api.apply_job(client, spec)
    details = await api.details(client, "shop", spec.name)
    assert (details.name, details.namespace, details.workload, details.phase) == (spec.name, "shop", "web",
                                                                                  Phase.PAUSED)
    versions = await api.versions(client, "shop", spec.name)
    assert versions.stable is not None and versions.stable.images == {"app": "nginx:1"}

    result = await api.operate(client, "shop", spec.name, names.UPDATE_VERSION,
                               UpdateVersionRequest(image="nginx:2", actor="carol"))
    assert result == OperationResult(message="delivering nginx:2 by carol", phase=Phase.PROGRESSING)

    with pytest.raises(CanaryError) as rejected:
        await api.operate(client, "shop", spec.name, names.UPDATE_VERSION,
                          UpdateVersionRequest(image="nginx:2"))
    assert str(rejected.value) == "nginx:2 is already the current image"

    with pytest.raises(JobNotFound, match=r"^no canary job shop/missing$"):
        await api.details(client, "shop", "missing")
    with pytest.raises(JobNotFound, match=r"^no canary job shop/missing$"):
        await api.operate(client, "shop", "missing", names.PROMOTE, OperationRequest())
    with pytest.raises(CanaryError, match="unknown operation"):
        await api.operate(client, "shop", spec.name, "explode", OperationRequest())

    await api.operate(client, "shop", spec.name, names.DELETE, OperationRequest())
    await asyncio.wait_for(client.get_workflow_handle(workflow_id("shop", spec.name)).result(), 30)
    with pytest.raises(JobEnded, match=f"^canary job shop/{spec.name} has ended"):
        await api.operate(client, "shop", spec.name, names.PROMOTE, OperationRequest())


async def test_list_filters_by_namespace_and_phase(env: WorkflowEnvironment) -> None:
    namespace = f"ns-{uuid.uuid4().hex[:6]}"
    first, second = job(namespace=namespace), job(namespace=namespace)
    for spec in (first, second):
        await api.apply_job(env.client, spec)
    await api.operate(env.client, namespace, second.name, names.PROMOTE, OperationRequest())

    async def listed(phase: str | None = None) -> list[str]:
        return [j.name for j in await api.list_jobs(env.client, namespace, phase)]

    assert sorted(await eventually(lambda: listed())) == sorted([first.name, second.name])
    assert await eventually(lambda: listed("healthy")) == [second.name]
    [summary] = await api.list_jobs(env.client, namespace, "healthy")
    assert (summary.namespace, summary.workload, summary.status) == (namespace, "web", "running")
    with pytest.raises(CanaryError, match="unknown phase"):
        await api.list_jobs(env.client, namespace, "sleeping")


async def test_no_worker_means_a_clear_timeout(
    env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = await env.client.start_workflow(names.WORKFLOW_TYPE, CanaryJobInput(job=job("orphan")),
                                             id="canary-shop-orphan", task_queue="nobody-polls-this")
    monkeypatch.setattr(api, "QUERY_TIMEOUT", 1.0)
    try:
        with pytest.raises(Unavailable, match=r"^no answer from Temporal for canary job shop/orphan in time: is the "
                                              "canary worker running"):
            await api.details(env.client, "shop", "orphan")
        # promote reads the gate it means first: no worker answers that either
        with pytest.raises(Unavailable, match="is the canary worker running"):
            await api.operate(env.client, "shop", "orphan", names.PROMOTE, OperationRequest(), timeout=1)
        with pytest.raises(Unavailable, match="promote not answered within 1 s; is the canary worker"):
            await api.operate(env.client, "shop", "orphan", names.PROMOTE, OperationRequest(release=2, step=1),
                              timeout=1)
    finally:
        await handle.terminate()


async def start_legacy(client: Client, spec: JobSpec,
                       id_for: Callable[[str, str], str] = legacy_workflow_id) -> None:
    """A job as an older client started it (``canary-<namespace>-<job>``, or ``canary/<namespace>/<job>``)."""
    await client.start_workflow(
        names.WORKFLOW_TYPE, CanaryJobInput(job=spec), id=id_for(spec.namespace, spec.name),
        task_queue=names.TASK_QUEUE, search_attributes=TypedSearchAttributes([
            SearchAttributePair(search.CANARY_JOB, spec.name),
            SearchAttributePair(search.CANARY_NAMESPACE, spec.namespace),
            SearchAttributePair(search.CANARY_WORKLOAD, spec.workload.name)]))


async def exists(client: Client, workflow: str) -> bool:
    try:
        await client.get_workflow_handle(workflow).describe()
    except RPCError as err:
        assert err.status == RPCStatusCode.NOT_FOUND
        return False
    return True


@pytest.mark.parametrize("id_for", [legacy_workflow_id, slash_workflow_id], ids=["dashes", "slashes"])
async def test_a_job_started_under_an_older_id_stays_addressable(env: WorkflowEnvironment,
                                                                 id_for: Callable[[str, str], str]) -> None:
    client, spec = env.client, job()
    await start_legacy(client, spec, id_for)

    assert (await api.details(client, "shop", spec.name)).name == spec.name
    assert (await api.versions(client, "shop", spec.name)).stable is not None
    await api.operate(client, "shop", spec.name, names.UPDATE_VERSION, UpdateVersionRequest(image="nginx:7"))
    applied = await api.apply_job(client, spec.with_rules(spec.rules.model_copy(update={"steps": spec.steps[:1]})))
    assert applied.created is False and "configured" in applied.message
    # Never a second workflow for a job that runs under its old id.
    assert not await exists(client, workflow_id("shop", spec.name))
    assert [op["operation"] for op in await operations(client, spec, legacy=True, id_for=id_for)] == [
        names.UPDATE_VERSION, names.UPDATE_RULES]
    with pytest.raises(CanaryError, match="delivers Deployment web, not api"):
        await api.apply_job(client, job(spec.name, workload="api"))

    await api.operate(client, "shop", spec.name, names.DELETE, OperationRequest())
    await asyncio.wait_for(client.get_workflow_handle(id_for("shop", spec.name)).result(), 30)
    with pytest.raises(JobEnded):
        await api.operate(client, "shop", spec.name, names.PROMOTE, OperationRequest())
    # Applied again once its old workflow has ended, the job moves to the new id for good.
    assert (await api.apply_job(client, spec)).created
    assert (await client.get_workflow_handle(workflow_id("shop", spec.name)).describe()).status == \
        WorkflowExecutionStatus.RUNNING
    await api.operate(client, "shop", spec.name, names.UPDATE_VERSION, UpdateVersionRequest(image="nginx:8"))
    assert [op["operation"] for op in await operations(client, spec)] == [names.UPDATE_VERSION]


async def test_jobs_whose_legacy_ids_collide_get_workflows_of_their_own(env: WorkflowEnvironment) -> None:
    suffix = uuid.uuid4().hex[:6]
    first, second = job(f"c-{suffix}", namespace="a-b"), job(f"b-c-{suffix}", namespace="a")
    assert legacy_workflow_id(first.namespace, first.name) == legacy_workflow_id(second.namespace, second.name)
    assert (await api.apply_job(env.client, first)).created
    assert (await api.apply_job(env.client, second)).created
    await api.operate(env.client, "a", second.name, names.UPDATE_VERSION, UpdateVersionRequest(image="nginx:2"))
    assert (await api.details(env.client, "a-b", first.name)).phase == Phase.PAUSED
    assert (await api.details(env.client, "a", second.name)).phase == Phase.PROGRESSING


async def test_continue_names_the_gate_it_was_sent_for(env: WorkflowEnvironment) -> None:
    client, spec = env.client, job()
    await api.apply_job(client, spec)
    result = await api.operate(client, "shop", spec.name, names.CONTINUE, OperationRequest(actor="erin"))
    assert result.message == "continuing by erin"
    [sent] = await operations(client, spec)
    assert (sent["release"], sent["step"]) == (2, 1)  # what details showed: release 2, step 1

    await api.apply_job(client, spec)  # the stand-in starts over at its first gate
    with pytest.raises(Conflict, match=r"^release 2 step 5 is not current"):
        await api.operate(client, "shop", spec.name, names.CONTINUE, OperationRequest(release=2, step=5))
    # Twenty at once at one gate (once the stand-in is back at it): one passes it, the others are
    # refused, none opens another.
    async def at_gate() -> bool:
        return (await api.details(client, "shop", spec.name)).phase == Phase.PAUSED

    assert await eventually(at_gate)
    outcomes = await asyncio.gather(*(api.operate(client, "shop", spec.name, names.CONTINUE, OperationRequest())
                                      for _ in range(20)), return_exceptions=True)
    assert sum(isinstance(o, OperationResult) for o in outcomes) == 1
    assert all(isinstance(o, (OperationResult, Conflict)) for o in outcomes), [
        o for o in outcomes if not isinstance(o, (OperationResult, Conflict))]
    assert (await api.details(client, "shop", spec.name)).current_step == 1


# -- canaryctl against the same server ---------------------------------------------------------


# $CANARY_ACTOR is recorded beside the OS user, never instead of it.
DANA = f"dana (os user {os_user()})"


# Set by test_cli_session's parameter: a Temporal HTTP API address that canaryctl must not need.
HTTP_ENV: dict[str, str] = {}


async def canaryctl(address: str, *args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    command = [str(CANARYCTL)] if CANARYCTL.exists() else [sys.executable, "-m", "starter.cli"]
    process = await asyncio.create_subprocess_exec(
        *command, "--address", address, *args, cwd=cwd, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "CANARY_ACTOR": "dana", **HTTP_ENV})
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("http_api", [False, True], ids=["grpc", "http-address-set"])
async def test_cli_session(env: WorkflowEnvironment, address: str, tmp_path: Path, http_api: bool,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    # With $TEMPORAL_HTTP_ADDRESS set (nothing listens there), every line and exit code stays the same:
    # these jobs' ids have '/' in them, which Temporal's HTTP API cannot name, so the SDK path answers
    # (test_http_ops covers the HTTP path itself).
    if http_api:
        from devenv.processes import free_port

        monkeypatch.setitem(HTTP_ENV, "TEMPORAL_HTTP_ADDRESS", f"127.0.0.1:{free_port()}")
    name = f"c{uuid.uuid4().hex[:8]}"
    (tmp_path / "job.yaml").write_text(f"name: {name}\nworkload: {{name: web}}\nsteps:\n"
                                       "  - setWeight: 25\n  - pause: {duration: 10m}\n")
    assert await canaryctl(address, "-n", "shop", "apply", "-f", "job.yaml", cwd=tmp_path) == (
        0, f"canary job shop/{name} created\n", "")

    status, out, err = await canaryctl(address, "get", name, "-n", "shop")
    assert status == 0, err
    assert f"Name:       {name}" in out and "Phase:      paused" in out and "[ ] 2. pause 10m" in out
    status, out, _ = await canaryctl(address, "get", name, "-n", "shop", "-o", "json")
    assert json.loads(out)["workload"] == "web"
    status, out, _ = await canaryctl(address, "history", name, "-n", "shop")
    assert out.splitlines()[1].split()[:3] == ["1", "stable", "nginx:1"]

    assert await canaryctl(address, "set-image", name, "nginx:2", "-n", "shop") == (
        0, f"shop/{name}: delivering nginx:2 by {DANA} (phase progressing)\n", "")
    assert await canaryctl(address, "set-image", name, "nginx:2", "-n", "shop") == (
        1, "", "error: nginx:2 is already the current image\n")

    async def ok(*args: str) -> str:
        status, out, err = await canaryctl(address, *args, "-n", "shop", cwd=tmp_path)
        assert (status, err) == (0, "")
        return out

    assert await ok("terminate", name, "--reason", "slow") == (
        f"shop/{name}: terminating (slow) by {DANA} (phase progressing)\n")
    assert await ok("rollback", name, "--to-revision", "1", "--skip-steps") == (
        f"shop/{name}: rolling back to 1 skip=True by {DANA} (phase progressing)\n")
    (tmp_path / "rules.yaml").write_text("steps: [{setWeight: 10}, {setWeight: 60}, {pause: {}}]\n")
    assert await ok("update-rules", name, "-f", "rules.yaml") == (
        f"shop/{name}: 3 steps by {DANA} (phase progressing)\n")
    assert await canaryctl(address, "continue", name, "-n", "shop", "--release", "2", "--step", "4") == (
        1, "", "error: release 2 step 4 is not current (release 2, step 1) (sent release 2, step 4; "
               f"`canaryctl get {name} -n shop` shows the current ones)\n")
    await ok("continue", name, "--release", "2", "--step", "1")
    assert await canaryctl(address, "continue", name, "-n", "shop") == (
        1, "", "error: nothing to continue: the job is progressing, not paused\n")
    assert await canaryctl(address, "get", "ghost", "-n", "shop") == (
        1, "", "error: no canary job shop/ghost\n")

    ops = await operations(env.client, job(name))
    assert [op["operation"] for op in ops] == [names.UPDATE_VERSION, names.TERMINATE, names.ROLLBACK,
                                               names.UPDATE_RULES, names.CONTINUE]
    assert all(op["actor"] == DANA and op["requestId"] for op in ops)
    assert (ops[-1]["release"], ops[-1]["step"]) == (2, 1)

    # --watch redraws until the job is idle (promote makes the stand-in healthy)
    command = [str(CANARYCTL)] if CANARYCTL.exists() else [sys.executable, "-m", "starter.cli"]
    watch = await asyncio.create_subprocess_exec(
        *command, "--address", address, "get", name, "-n", "shop", "--watch",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    interrupted = await asyncio.create_subprocess_exec(
        *command, "--address", address, "get", name, "-n", "shop", "--watch",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    # Both watches have drawn their first frame (so they are past start-up) before anything happens.
    first_lines = [await asyncio.wait_for(proc.stdout.readline(), 60)  # type: ignore[union-attr]
                   for proc in (watch, interrupted)]
    assert all(line.startswith(b"Name:") for line in first_lines), first_lines
    assert watch.returncode is None and interrupted.returncode is None
    interrupted.send_signal(signal.SIGINT)  # Ctrl-C is how a watch normally ends: quietly, status 0
    _, interrupted_err = await asyncio.wait_for(interrupted.communicate(), 30)
    assert interrupted.returncode == 0 and interrupted_err == b""

    assert (await canaryctl(address, "promote", name, "-n", "shop"))[0] == 0
    watch_rest, watch_err = await asyncio.wait_for(watch.communicate(), 30)
    watch_out = first_lines[0] + watch_rest
    assert watch.returncode == 0, watch_err
    frames = watch_out.decode().split("\n\n" + "Name:")
    assert len(frames) >= 2 and "Phase:      healthy" in frames[-1]

    async def listed() -> str:
        status, out, err = await canaryctl(address, "list", "-n", "shop", "--phase", "healthy")
        assert status == 0, err
        return out if name in out else ""

    lines = (await eventually(listed)).splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "WORKLOAD", "PHASE", "STATUS", "AGE"]
    assert ["shop", name, "web", "healthy", "running"] in [line.split()[:5] for line in lines]
    status, out, _ = await canaryctl(address, "list", "-n", "shop", "-o", "json")
    assert name in {j["name"] for j in json.loads(out)}
    assert (await canaryctl(address, "delete", name, "-n", "shop"))[0] == 0
