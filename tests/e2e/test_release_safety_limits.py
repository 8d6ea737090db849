"""Bounds on what a job may ask for, enforced where the input enters (the job file, an update,
a raw signal): a job that cannot run must be refused, naming the field and the bound, and
never reach the workflow in a form that wedges it."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from starter import cli
from starter import client as canary
from starter.errors import CanaryError, InvalidInput
from tests.e2e.conftest import Shop
from workflows import names
from workflows.models import OperationRequest, Phase, UpdateRulesRequest
from workflows.spec import workflow_id

pytestmark = pytest.mark.cluster
HUGE_PAUSE = [{"setWeight": 25}, {"pause": {"duration": "3000000d"}}]
# steps.N.pause.duration; the wire path may still carry pydantic's tag (steps.N.pause.pause.duration).
PAUSE_FIELD = re.compile(r"steps\.\d+\.pause\.(pause\.)?duration")


async def canaryctl(capsys: pytest.CaptureFixture[str], temporal: Client, *args: str) -> tuple[int, str]:
    """Run ``canaryctl`` as a user would (in a thread: it runs its own event loop); status and stderr."""
    address = str(temporal.service_client.config.target_host)
    capsys.readouterr()
    status = await asyncio.to_thread(cli.run, [*args, "--address", address])
    return status, capsys.readouterr().err


def job_file(tmp_path: Path, shop: Shop, steps: list[dict[str, Any]]) -> str:
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"name": "web", "namespace": shop.namespace, "workload": {"name": "web"},
                                "steps": steps}))
    return str(path)


async def job_exists(shop: Shop) -> bool:
    try:
        await shop.temporal.get_workflow_handle(workflow_id(shop.namespace, "web")).describe()
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def test_a_pause_beyond_a_year_is_refused_wherever_it_enters(
        shop: Shop, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shop.create_workload()
    status, err = await canaryctl(capsys, shop.temporal, "apply", "-f", job_file(tmp_path, shop, HUGE_PAUSE))
    assert status == cli.EXIT_USAGE, f"a 3000000d pause was accepted (status {status}): {err}"
    assert PAUSE_FIELD.search(err) and "365d" in err, err
    assert not await job_exists(shop)

    await shop.apply()
    await shop.wait(lambda d: d.phase == Phase.HEALTHY, "attached")
    with pytest.raises(CanaryError) as refused:
        await canary.operate(shop.temporal, shop.namespace, "web", names.UPDATE_RULES,
                             UpdateRulesRequest(rules={"steps": HUGE_PAUSE}, actor="e2e"))
    assert isinstance(refused.value, InvalidInput), refused.value
    assert PAUSE_FIELD.search(f"{refused.value.field} {refused.value.message}") and "365d" in refused.value.message

    # A raw signal cannot be refused to its sender: the job records the rejection and stays usable.
    handle = shop.temporal.get_workflow_handle(workflow_id(shop.namespace, "web"))
    await handle.signal(names.UPDATE_RULES, {"rules": {"steps": HUGE_PAUSE}, "actor": "ci"})
    rejected = await shop.wait(lambda d: any(e.kind == "rejected" for e in d.events) or any(
        e.kind == "rules-updated" for e in d.events), "the signal handled")
    rejection = [e.message for e in rejected.events if e.kind == "rejected"]
    assert rejection and PAUSE_FIELD.search(rejection[0]), [(e.kind, e.message) for e in rejected.events]
    assert "3000000" not in json.dumps(rejected.rules), rejected.rules

    shop.set_image("registry.local/web:2")
    await shop.wait(lambda d: d.phase == Phase.PAUSED, "a release under the old rules")
    await canary.operate(shop.temporal, shop.namespace, "web", names.TERMINATE, OperationRequest(actor="e2e"))
    await shop.wait(lambda d: d.phase == Phase.TERMINATED, "terminated")
    await canary.operate(shop.temporal, shop.namespace, "web", names.DELETE, OperationRequest(actor="e2e"))
    assert await asyncio.wait_for(handle.result(), 60) == "deleted"


async def test_a_job_of_ten_thousand_steps_is_refused(
        shop: Shop, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shop.create_workload()
    steps = [{"setWeight": 1 + n % 99} for n in range(10_000)]
    status, err = await canaryctl(capsys, shop.temporal, "apply", "-f", job_file(tmp_path, shop, steps))
    assert status == cli.EXIT_USAGE, f"10,000 steps were accepted (status {status}): {err}"
    assert "steps" in err and "100" in err, err
    assert not await job_exists(shop)

    # The same bound on a running job's new rules.
    await shop.apply()
    with pytest.raises(CanaryError) as refused:
        await canary.operate(shop.temporal, shop.namespace, "web", names.UPDATE_RULES,
                             UpdateRulesRequest(rules={"steps": steps}, actor="e2e"))
    assert isinstance(refused.value, InvalidInput) and "steps" in (refused.value.field or ""), refused.value
    assert "100" in refused.value.message
    assert len((await shop.details()).rules["steps"]) == 4
