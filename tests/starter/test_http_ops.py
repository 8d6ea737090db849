"""Operations over Temporal's HTTP API answer exactly as the SDK path does.

Each case runs on both paths against one dev server (with its HTTP API on) and the stand-in job
of ``test_client``. The jobs here run under the first scheme's id (``canary-<ns>-<job>``, which the
HTTP API can name like today's ``canary.<ns>.<job>``) and the HTTP path is told to look only there;
the SDK path finds them there by itself. An id with ``/`` (older clients') is the SDK's to name
(:func:`starter.temporal_http.addressable`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
from temporalio import workflow
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from devenv.processes import free_port
from starter import client as api
from starter import http_ops
from starter.cli import os_user, run
from starter.connection import ConnectionOverrides
from starter.errors import Conflict, JobEnded, JobNotFound, Unavailable
from starter.temporal_http import Endpoint, Unsupported
from tests.starter.test_client import StandInJob, job, operations, start_legacy
from tests.temporal_envs import local_env
from workflows import names
from workflows.models import CanaryJobInput, OperationRequest, RollbackRequest, UpdateVersionRequest
from workflows.spec import legacy_workflow_id, older_workflow_ids, workflow_id

MODELS: dict[str, type[OperationRequest]] = {
    names.UPDATE_VERSION: UpdateVersionRequest, names.ROLLBACK: RollbackRequest}


@workflow.defn(name="Rejecter")
class Rejecter:
    """Refuses every update the way the job's admission does: typed, with the field to fix."""

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)

    @workflow.update(name=names.UPDATE_VERSION)
    def update_version(self, request: dict[str, Any]) -> None:
        pass

    @update_version.validator
    def _refuse(self, request: dict[str, Any]) -> None:
        raise ApplicationError("image: no registry in the name", "image", type="InvalidOperationInput")


@pytest_asyncio.fixture(scope="module")
async def env() -> AsyncIterator[tuple[WorkflowEnvironment, Endpoint]]:
    port = free_port()
    async with await local_env(dev_server_extra_args=["--http-port", str(port)]) as environment:
        async with Worker(environment.client, task_queue=names.TASK_QUEUE, workflows=[StandInJob, Rejecter],
                          workflow_runner=UnsandboxedWorkflowRunner()):
            yield environment, Endpoint(f"127.0.0.1:{port}", "default")


def legacy_only(namespace: str, name: str) -> tuple[str]:
    return (legacy_workflow_id(namespace, name),)


Operate = Callable[[str, str, dict[str, Any]], Awaitable[tuple[str, str]]]


def path(client: Client, endpoint: Endpoint, which: str) -> Operate:
    """``operate`` on one path, answering ``(message, phase)`` either way."""
    async def sdk(name: str, operation: str, request: dict[str, Any]) -> tuple[str, str]:
        model = MODELS.get(operation, OperationRequest).model_validate(request)
        result = await api.operate(client, "shop", name, operation, model, timeout=5)
        return result.message, result.phase.value

    async def http(name: str, operation: str, request: dict[str, Any]) -> tuple[str, str]:
        answer = await asyncio.to_thread(http_ops.operate, endpoint, "shop", name, operation, request,
                                         timeout=5, ids=legacy_only)
        return answer["message"], answer["phase"]

    return sdk if which == "sdk" else http


def test_the_http_path_looks_for_the_ids_the_sdk_path_looks_for() -> None:
    assert http_ops.job_ids("shop", "web") == (workflow_id("shop", "web"), *older_workflow_ids("shop", "web"))


@pytest.mark.parametrize("which", ["sdk", "http"])
async def test_operations_answers_and_refusals(env: tuple[WorkflowEnvironment, Endpoint], which: str) -> None:
    environment, endpoint = env
    client, spec = environment.client, job()
    operate = path(client, endpoint, which)
    await start_legacy(client, spec)

    assert await operate(spec.name, names.UPDATE_VERSION, {"image": "nginx:2", "actor": "erin"}) == (
        "delivering nginx:2 by erin", "progressing")
    with pytest.raises(Conflict, match=r"^nginx:2 is already the current image$"):
        await operate(spec.name, names.UPDATE_VERSION, {"image": "nginx:2"})
    with pytest.raises(Conflict, match=r"^nothing to continue: the job is progressing, not paused$"):
        await operate(spec.name, names.CONTINUE, {})
    assert await operate(spec.name, names.ROLLBACK, {"revision": 1, "skipSteps": True, "requestId": "r-1"}) == (
        "rolling back to 1 skip=True by None", "progressing")
    assert await operate(spec.name, names.PROMOTE, {"actor": "erin"}) == ("promoted by erin", "healthy")

    sent = await operations(client, spec, legacy=True)
    assert [op["operation"] for op in sent] == [names.UPDATE_VERSION, names.ROLLBACK, names.PROMOTE]
    # What the handlers received is the same on both paths: the model's fields under their aliases,
    # and the gate the job showed (release 2, step 1) filled in for promote.
    assert sent[1] == {"operation": names.ROLLBACK, "requestId": "r-1", "actor": None, "reason": None,
                       "release": None, "step": None, "revision": 1, "skipSteps": True}
    assert (sent[2]["release"], sent[2]["step"]) == (2, 1)

    with pytest.raises(JobNotFound, match=r"^no canary job shop/ghost$"):
        await operate("ghost", names.PROMOTE, {})
    assert await operate(spec.name, names.DELETE, {}) == ("deleting by None", "deleted")
    await client.get_workflow_handle(legacy_workflow_id("shop", spec.name)).result()
    with pytest.raises(JobEnded, match=rf"^canary job shop/{spec.name} has ended; apply it again to restart it$"):
        await operate(spec.name, names.TERMINATE, {"reason": "late"})


async def test_a_validator_rejection_keeps_its_type_and_field(env: tuple[WorkflowEnvironment, Endpoint]) -> None:
    environment, endpoint = env
    handle = await environment.client.start_workflow("Rejecter", id=f"rejecter-{uuid.uuid4().hex[:6]}",
                                                     task_queue=names.TASK_QUEUE)
    try:
        result, failure = await asyncio.to_thread(endpoint.update, handle.id, names.UPDATE_VERSION,
                                                  {"image": "x"}, "u-1", timeout=10)
        assert result is None and failure is not None
        assert (failure.type, failure.message, failure.details) == (
            "InvalidOperationInput", "image: no registry in the name", ["image"])
    finally:
        await handle.terminate()


async def test_without_a_worker_the_timeouts_say_so(env: tuple[WorkflowEnvironment, Endpoint],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    environment, endpoint = env
    name = f"orphan{uuid.uuid4().hex[:6]}"
    handle = await environment.client.start_workflow(
        names.WORKFLOW_TYPE, CanaryJobInput(job=job(name)), id=legacy_workflow_id("shop", name),
        task_queue="nobody-polls-this")
    monkeypatch.setattr(http_ops, "QUERY_TIMEOUT", 1.0)
    try:
        # promote reads the gate it means first: no worker answers that query
        with pytest.raises(Unavailable, match=rf"^no answer from Temporal for canary job shop/{name} in time: "
                                              "is the canary worker running"):
            await asyncio.to_thread(http_ops.operate, endpoint, "shop", name, names.PROMOTE, {}, timeout=1,
                                    ids=legacy_only)
        with pytest.raises(Unavailable, match=r"promote not answered within 1 s; is the canary worker running"):
            await asyncio.to_thread(http_ops.operate, endpoint, "shop", name, names.PROMOTE,
                                    {"release": 2, "step": 1}, timeout=1, ids=legacy_only)
    finally:
        await handle.terminate()


async def test_what_the_http_path_leaves_to_the_sdk(env: tuple[WorkflowEnvironment, Endpoint],
                                                     tmp_path: Any) -> None:
    _, endpoint = env
    # Not under today's id: it may run under the slash id older clients gave, which only the SDK can name.
    with pytest.raises(Unsupported, match="cannot name"):
        http_ops.find(endpoint, "shop", "nowhere")
    # A route the server does not have, and an address where nothing listens.
    with pytest.raises(Unsupported, match="does not serve"):
        await asyncio.to_thread(endpoint.call, "GET", "no-such-route")
    with pytest.raises(Unsupported):
        Endpoint(f"127.0.0.1:{free_port()}", "default").describe("canary-shop-web")
    # An unknown Temporal namespace is named, as on the SDK path.
    with pytest.raises(Unavailable, match=rf"^Temporal namespace 'nope' not found at {endpoint.address}$"):
        await asyncio.to_thread(http_ops.find, Endpoint(endpoint.address, "nope"), "shop", "web", legacy_only)
    # A profile file is the SDK's to read.
    config = tmp_path / "temporal.toml"
    config.write_text('[profile.default]\naddress = "elsewhere:7233"\n')
    with pytest.raises(Unsupported, match="profile"):
        http_ops.endpoint(endpoint.address, ConnectionOverrides(), {"TEMPORAL_CONFIG_FILE": str(config)})


def test_the_endpoint_carries_namespace_key_and_tls_as_the_grpc_path() -> None:
    environ = {"TEMPORAL_NAMESPACE": "prod", "TEMPORAL_API_KEY": "k", "XDG_CONFIG_HOME": "/nonexistent"}
    keyed = http_ops.endpoint("h:1", ConnectionOverrides(), environ)
    assert (keyed.namespace, keyed.api_key, keyed.tls is not None) == ("prod", "k", True)  # a key turns TLS on
    plain = http_ops.endpoint("h:1", ConnectionOverrides(namespace="dev", tls=False), environ)
    assert (plain.namespace, plain.tls) == ("dev", None)
    with pytest.raises(Unsupported):  # half a client certificate: the SDK path words the error
        http_ops.endpoint("h:1", ConnectionOverrides(tls_client_cert="/c.pem"), environ)


async def test_canaryctl_over_http(env: tuple[WorkflowEnvironment, Endpoint], monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI's own lines and exit codes on the HTTP path, with the SDK never loaded for them."""
    environment, endpoint = env
    client, spec = environment.client, job()
    await start_legacy(client, spec)
    monkeypatch.setattr(http_ops, "job_ids", legacy_only)
    monkeypatch.setenv("CANARY_ACTOR", "dana")
    monkeypatch.setenv("XDG_CONFIG_HOME", "/nonexistent")
    # An SDK fallback would need this address; it is a closed port, so only the HTTP path can answer.
    closed = f"127.0.0.1:{free_port()}"

    async def canaryctl(*args: str) -> tuple[int, str, str]:
        status = await asyncio.to_thread(run, ["--address", closed, "--http-address", endpoint.address,
                                               "-n", "shop", *args])
        out, err = capsys.readouterr()
        return status, out, err

    dana = f"dana (os user {os_user()})"
    assert await canaryctl("set-image", spec.name, "nginx:2") == (
        0, f"shop/{spec.name}: delivering nginx:2 by {dana} (phase progressing)\n", "")
    assert await canaryctl("set-image", spec.name, "nginx:2") == (
        1, "", "error: nginx:2 is already the current image\n")
    assert await canaryctl("continue", spec.name, "--release", "2", "--step", "4") == (
        1, "", "error: nothing to continue: the job is progressing, not paused (sent release 2, step 4; "
               f"`canaryctl get {spec.name} -n shop` shows the current ones)\n")
    assert await canaryctl("terminate", spec.name, "--reason", "slow") == (
        0, f"shop/{spec.name}: terminating (slow) by {dana} (phase progressing)\n", "")
    assert await canaryctl("promote", "ghost") == (1, "", "error: no canary job shop/ghost\n")
    # A request the model refuses is refused as before: the model is asked, and names the field.
    status, out, err = await canaryctl("rollback", spec.name, "--to-revision", "0")
    assert (status, out) == (2, "") and err.startswith("error: revision: Input should be greater than or equal to 1")
    sent = await operations(client, spec, legacy=True)
    assert [op["operation"] for op in sent] == [names.UPDATE_VERSION, names.TERMINATE]
    assert all(op["actor"] == dana and len(op["requestId"]) == 32 for op in sent)

