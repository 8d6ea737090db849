"""The worker's shared watch end to end, on a dev server of its own: an edit made while no worker
ran is delivered when one starts, and two workers watching the same jobs deliver it once."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from kubernetes.client import ApiClient
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from tests.e2e.conftest import Shop
from tests.temporal_envs import local_env
from worker import serve
from workflows.models import JobDetails, Phase

pytestmark = pytest.mark.cluster


def promoted(revision: int) -> Callable[[JobDetails], bool]:
    return lambda d: d.phase == Phase.HEALTHY and d.stable is not None and d.stable.revision == revision


def count(details: JobDetails, kind: str) -> int:
    return sum(1 for event in details.events if event.kind == kind)


async def test_an_edit_made_while_no_worker_ran_is_delivered_when_one_starts(kube_api: ApiClient,
                                                                             namespace: str) -> None:
    async with await local_env() as env:
        shop = Shop(env.client, kube_api, namespace)
        async with serve(env.client, kube_api, activity_threads=20, watch_namespaces=[namespace]):
            await shop.attach(steps=[{"setWeight": 50}])
        shop.set_image("registry.local/web:2")  # every worker is down
        async with serve(env.client, kube_api, activity_threads=20, watch_namespaces=[namespace]):
            details = await shop.wait(promoted(2), "revision 2 promoted by the next worker")
        assert details.stable is not None and details.stable.images["app"] == "registry.local/web:2"
        assert count(details, "release-started") == 1


async def test_two_workers_watching_the_same_job_deliver_an_edit_once(kube_api: ApiClient, namespace: str) -> None:
    async with await local_env() as env:
        shop = Shop(env.client, kube_api, namespace)
        # A second worker is a second client: the SDK takes one worker per queue and client.
        other = await Client.connect(env.client.service_client.config.target_host,
                                     data_converter=pydantic_data_converter)
        async with serve(env.client, kube_api, activity_threads=20, watch_namespaces=[namespace]), \
                serve(other, kube_api, activity_threads=20):  # one namespaced, one cluster-wide
            await shop.attach(steps=[{"setWeight": 25}, {"setWeight": 75}])
            for n in (2, 3):
                shop.set_image(f"registry.local/web:{n}")
                details = await shop.wait(promoted(n), f"revision {n} promoted")
            shop.apps.patch_namespaced_deployment("web", shop.namespace, {"spec": {"replicas": 6}})
            details = await shop.wait(lambda d: count(d, "scaled") == 1, "the user's scale seen")
        assert count(details, "release-started") == 2
        assert count(details, "superseded") == 0
        assert details.replicas == 6
