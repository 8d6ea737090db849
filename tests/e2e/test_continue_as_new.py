"""On the dev server, with the real watch: the job continues-as-new when the server asks, and
keeps its history and its watch across the hop."""

from __future__ import annotations

import pytest
from kubernetes.client import ApiClient
from temporalio.client import WorkflowExecution, WorkflowExecutionStatus

from starter import client as canary
from tests.e2e.conftest import Shop, until
from tests.temporal_envs import local_env
from worker import serve
from workflows.models import Phase
from workflows.spec import workflow_id

pytestmark = pytest.mark.cluster


async def test_history_and_watch_survive_continue_as_new(kube_api: ApiClient, namespace: str) -> None:
    extra = ["--dynamic-config-value", "limit.historyCount.suggestContinueAsNew=40"]
    async with await local_env(dev_server_extra_args=extra) as env:
        async with serve(env.client, kube_api, activity_threads=20):
            shop = Shop(env.client, kube_api, namespace)
            await shop.attach(steps=[{"setWeight": 50}])
            for n in range(2, 6):
                shop.set_image(f"registry.local/web:{n}")
                await shop.wait(lambda d, n=n: d.phase == Phase.HEALTHY and d.stable is not None
                                and d.stable.revision == n, f"revision {n} promoted")
            job_id = workflow_id(namespace, "web")
            handle = env.client.get_workflow_handle(job_id)

            async def runs_listed() -> list[WorkflowExecution]:
                return [w async for w in env.client.list_workflows(f"WorkflowId = '{job_id}'")]

            runs = await until(runs_listed, lambda found: len(found) >= 2, "a continued-as-new run", timeout=20)
            assert sum(r.status == WorkflowExecutionStatus.CONTINUED_AS_NEW for r in runs) == len(runs) - 1
            versions = await canary.versions(env.client, namespace, "web")
            assert [v.revision for v in versions.history] == [5, 4, 3, 2, 1]
            # The watch of the newest run still sees edits.
            shop.set_image("registry.local/web:6")
            await shop.wait(lambda d: d.stable is not None and d.stable.revision == 6, "revision 6 promoted")
            await handle.terminate("test over")
