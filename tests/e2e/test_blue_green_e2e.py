"""Blue-green on the real cluster: preview at full size, one switch, an instant switch back.

No data plane runs here; what a user's request would reach is a Service's Ready endpoints,
so the test reads those (EndpointSlices, by the pods' images) at every stage, and follows the
active Service with a watch to see every selector it ever had: each switch must be one write.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import watch

from starter import client as canary
from starter.errors import InvalidInput
from tests.e2e.conftest import Shop, until
from tests.kube_helpers import service
from workflows import names
from workflows.models import OperationRequest, Outcome, Phase, RollbackRequest
from workflows.spec import workflow_id

pytestmark = pytest.mark.cluster

V1, V2, V3 = "registry.local/web:1", "registry.local/web:2", "registry.local/web:3"
HASH = "pod-template-hash"


def blue_green(**fields: Any) -> dict[str, Any]:
    return {"steps": [], "mode": "blueGreen",
            "blueGreen": {"activeService": "web", "previewService": "web-preview", **fields}}


def endpoint_images(shop: Shop, name: str) -> list[str]:
    """Images of the Ready pods behind Service ``name``, sorted: what its users reach."""
    slices = shop.discovery.list_namespaced_endpoint_slice(
        shop.namespace, label_selector=f"kubernetes.io/service-name={name}").items
    ips = {a for s in slices for e in s.endpoints or [] if e.conditions.ready for a in e.addresses}
    return sorted(p.spec.containers[0].image for p in shop.pods() if p.status.pod_ip in ips)


async def serves(shop: Shop, name: str, images: list[str], what: str) -> None:
    await until(lambda: asyncio.to_thread(endpoint_images, shop, name), lambda found: found == images, what,
                timeout=30)


def own_pods(shop: Shop) -> list[str]:
    """Names of the user's Deployment's own pods (not green's)."""
    return sorted(p.metadata.name for p in shop.pods() if "canary-delivery.dev/track" not in (p.metadata.labels or {}))


@pytest.fixture
def selectors(shop: Shop) -> Iterator[list[dict[str, str]]]:
    """Every selector the active Service ``web`` has had, in order, as a watch saw each write."""
    seen: list[dict[str, str]] = []
    stop = threading.Event()
    ready = threading.Event()

    def follow() -> None:
        stream = watch.Watch()
        while not stop.is_set():
            ready.set()
            for event in stream.stream(shop.core.list_namespaced_service, shop.namespace,
                                       field_selector="metadata.name=web", timeout_seconds=1):
                selector = dict(event["object"].spec.selector or {})
                if not seen or seen[-1] != selector:
                    seen.append(selector)
                if stop.is_set():
                    break

    shop.create_workload()
    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    ready.wait(5)
    yield seen
    stop.set()
    thread.join(5)


async def operate(shop: Shop, operation: str, request: OperationRequest | None = None) -> None:
    await canary.operate(shop.temporal, shop.namespace, "web", operation, request or OperationRequest(actor="e2e"))


async def test_preview_then_one_switch_then_the_deployment_takes_over(shop: Shop, selectors) -> None:
    await shop.apply(**blue_green(autoPromotionEnabled=False, scaleDownDelaySeconds=15))
    await shop.wait(lambda d: d.phase == Phase.HEALTHY, "attached")
    blue_pods = own_pods(shop)

    shop.set_image(V2)
    preview = await shop.wait(lambda d: d.phase == Phase.PAUSED and d.blue_green is not None
                              and d.blue_green.preview_revision == 2, "green in preview")
    assert preview.mode == "blueGreen" and preview.blue_green is not None
    assert preview.blue_green.active_revision == 1
    assert shop.canary_replicas() == 4 and shop.workload().spec.replicas == 4  # green at full size beside blue
    await serves(shop, "web-preview", [V2] * 4, "the preview Service on the 4 green pods")
    await serves(shop, "web", [V1] * 4, "the active Service still on blue")
    preview_service = shop.core.read_namespaced_service("web-preview", shop.namespace)
    assert preview_service.metadata.labels == {"canary-delivery.dev/job": "web"}
    assert [p.port for p in preview_service.spec.ports] == [80]

    await operate(shop, names.PROMOTE)
    switched = await shop.wait(lambda d: d.blue_green is not None and d.blue_green.stage == "switched", "switched")
    assert switched.blue_green is not None and switched.blue_green.active_revision == 2
    await serves(shop, "web", [V2] * 4, "the active Service on green")
    assert own_pods(shop) == blue_pods  # blue is still up, for the scale-down delay

    done = await shop.wait(lambda d: d.phase == Phase.HEALTHY and d.canary is None, "handed over", timeout=90)
    assert done.stable is not None and done.stable.revision == 2
    await until(lambda: asyncio.to_thread(shop.pods, "canary"), lambda pods: pods == [], "green's pods gone")
    await serves(shop, "web", [V2] * 4, "the active Service on the Deployment's own new pods")
    assert shop.own_images() == [V2] * 4
    active = shop.core.read_namespaced_service("web", shop.namespace)
    assert active.spec.selector == {"app": "web"}
    assert "canary-delivery.dev/selector" not in (active.metadata.annotations or {})

    # Every selector the active Service had: the user's, blue's, green's (one write), the user's again.
    assert [sorted(s) for s in selectors] == [["app"], ["app", HASH], ["app", HASH], ["app"]]
    assert selectors[1][HASH] != selectors[2][HASH]

    await operate(shop, names.DELETE)
    await until(lambda: asyncio.to_thread(lambda: sorted(s.metadata.name for s in shop.core.list_namespaced_service(
        shop.namespace).items)), lambda found: found == ["web"], "the job's preview Service removed")


async def test_terminate_leaves_the_active_service_and_a_rollback_in_the_delay_is_instant(
        shop: Shop, selectors) -> None:
    await shop.apply(**blue_green(autoPromotionEnabled=False, scaleDownDelaySeconds=600))
    await shop.wait(lambda d: d.phase == Phase.HEALTHY, "attached")
    blue_pods = own_pods(shop)

    shop.set_image(V2)
    await shop.wait(lambda d: d.phase == Phase.PAUSED and d.blue_green is not None
                    and d.blue_green.preview_revision == 2, "green in preview")
    await operate(shop, names.TERMINATE, OperationRequest(reason="e2e", actor="e2e"))
    await shop.wait(lambda d: d.phase == Phase.TERMINATED, "terminated")
    await until(lambda: asyncio.to_thread(shop.pods, "canary"), lambda pods: pods == [], "the preview torn down")
    await serves(shop, "web", [V1] * 4, "the active Service on blue")
    # Narrowed to blue and given back: never green.
    assert [sorted(s) for s in selectors] == [["app"], ["app", HASH], ["app"]]

    shop.set_image(V3)
    await shop.wait(lambda d: d.phase == Phase.PAUSED and d.blue_green is not None
                    and d.blue_green.preview_revision == 3, "the next green in preview")
    await operate(shop, names.CONTINUE)
    await shop.wait(lambda d: d.blue_green is not None and d.blue_green.stage == "switched", "switched")
    await serves(shop, "web", [V3] * 4, "the active Service on green")
    green_selector = dict(selectors[-1])

    await canary.operate(shop.temporal, shop.namespace, "web", names.ROLLBACK, RollbackRequest(revision=1))
    await serves(shop, "web", [V1] * 4, "the active Service back on blue")
    back = await shop.wait(lambda d: d.phase == Phase.HEALTHY and d.canary is None, "back on revision 1")
    assert back.stable is not None and back.stable.revision == 1
    assert own_pods(shop) == blue_pods  # the very pods that served before: nothing was started again
    # From green straight back to blue's selector: one write, then the user's own.
    index = next(i for i, s in enumerate(selectors) if s == green_selector)
    assert selectors[index + 1] == selectors[1] and selectors[index + 2] == {"app": "web"}
    versions = await canary.versions(shop.temporal, shop.namespace, "web")
    assert [(v.revision, v.outcome) for v in versions.history[:2]] == [(3, Outcome.ROLLED_BACK),
                                                                      (2, Outcome.TERMINATED)]


async def test_delete_in_preview_gives_the_users_services_back(shop: Shop, selectors) -> None:
    shop.core.create_namespaced_service(shop.namespace, service("web-preview", selector={"app": "web"}))
    await shop.apply(**blue_green(autoPromotionEnabled=False))
    await shop.wait(lambda d: d.phase == Phase.HEALTHY, "attached")
    shop.set_image(V2)
    await shop.wait(lambda d: d.phase == Phase.PAUSED and d.blue_green is not None
                    and d.blue_green.preview_revision == 2, "green in preview")
    await serves(shop, "web-preview", [V2] * 4, "the user's preview Service narrowed to green")
    narrowed = shop.core.read_namespaced_service("web-preview", shop.namespace)
    assert narrowed.metadata.annotations["canary-delivery.dev/selector"] == '{"app": "web"}'

    await operate(shop, names.DELETE)
    handle = shop.temporal.get_workflow_handle(workflow_id(shop.namespace, "web"))
    assert await asyncio.wait_for(handle.result(), 60) == "deleted"
    assert shop.canary_replicas() == 0
    for name in ("web", "web-preview"):
        given_back = shop.core.read_namespaced_service(name, shop.namespace)  # the user's: kept
        assert given_back.spec.selector == {"app": "web"}
        assert "canary-delivery.dev/selector" not in (given_back.metadata.annotations or {})
    await serves(shop, "web", [V1] * 4, "the active Service on the Deployment given back")
    assert not shop.workload().spec.paused
    assert [sorted(s) for s in selectors] == [["app"], ["app", HASH], ["app"]]


async def test_services_that_cannot_carry_the_release_are_refused_naming_the_field(shop: Shop) -> None:
    shop.create_workload()
    with pytest.raises(InvalidInput) as missing:
        await shop.apply(**blue_green(activeService="web-live"))
    assert missing.value.field == "blueGreen.activeService" and "web-live" in str(missing.value)

    shop.core.create_namespaced_service(shop.namespace, service("other", selector={"app": "other"}))
    with pytest.raises(InvalidInput) as elsewhere:
        await shop.apply(**blue_green(activeService="other"))
    assert elsewhere.value.field == "blueGreen.activeService" and "does not select" in str(elsewhere.value)
    workload = shop.workload()
    assert not workload.spec.paused and "canary-delivery.dev/job" not in (workload.metadata.annotations or {})
    assert shop.core.read_namespaced_service("other", shop.namespace).spec.selector == {"app": "other"}

    with pytest.raises(Exception, match="steps: not used with blueGreen"):
        await shop.apply(**{**blue_green(), "steps": [{"setWeight": 50}]})
