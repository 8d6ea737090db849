"""The blue-green Service activities against the real local cluster.

Covers: a Service aimed at one version's ReplicaSet (its endpoints become exactly those pods),
never before that ReplicaSet has the available pods asked for, in a write guarded by the
resourceVersion it read (a concurrent writer's change is kept, not overwritten), the user's
selector recorded and given back, a preview Service created like the active one and removed
on delete, and Services that cannot carry a release refused naming the field.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubernetes.client import ApiClient

from activities import errors
from activities.blue_green import SELECTOR_ANNOTATION, BlueGreenActivities
from activities.templates import JOB_KEY, TRACK_LABEL, template_hash
from tests.activities.test_kube import JOB, Web, failure, run
from tests.kube_helpers import eventually, service
from workflows.service_selection import BlueGreenServices, RestoreRequest, SelectRequest, Side

pytestmark = pytest.mark.cluster


class Blue:
    """``web`` attached (blue: 3 pods), green (version 2) in ``web-canary`` at ``green_pods`` pods."""

    def __init__(self, web: Web, green_pods: int) -> None:
        self.web, self.acts = web, BlueGreenActivities(web.api)
        self.blue = web.attach()
        # Only the image changes: the server's defaults stay, as in a template read back from the Deployment.
        template: dict[str, Any] = copy.deepcopy(self.blue.template)
        template["spec"]["containers"][0]["image"] = "registry.local/web:2"
        self.green_hash = template_hash(template)
        web.start_canary(self.blue.model_copy(update={"template": template, "template_hash": self.green_hash}),
                         replicas=green_pods)

    def services(self, **fields: Any) -> dict[str, Any]:
        return {"namespace": self.web.ns, "job": JOB, "workload": "web", "active_service": "web",
                "preview_service": "web-preview", **fields}

    def select(self, service: str, side: Side, ready: int) -> SelectRequest:
        version = self.green_hash if side is Side.CANARY else self.blue.template_hash
        return SelectRequest(**self.services(), service=service, side=side, template_hash=version, ready=ready)

    def endpoint_ips(self, name: str) -> set[str]:
        slices = self.web.discovery.list_namespaced_endpoint_slice(
            self.web.ns, label_selector=f"kubernetes.io/service-name={name}").items
        return {a for s in slices for e in s.endpoints or [] if e.conditions.ready for a in e.addresses}

    def ips(self, selector: str) -> set[str]:
        return {p.status.pod_ip for p in self.web.ready_pods(selector)}


@pytest.fixture
def web(kube_api: ApiClient, namespace: str) -> Web:
    return Web(kube_api, namespace)


def green_available(web: Web, pods: int) -> None:
    """Wait as the activity judges: by the green ReplicaSet's available count, which lags the pods' Ready."""
    eventually(lambda: len(web.ready_pods(f"{TRACK_LABEL}=canary")) == pods
               and (web.read("web-canary").status.available_replicas or 0) == pods
               and all((rs.status.available_replicas or 0) == pods for rs in web.apps.list_namespaced_replica_set(
                   web.ns, label_selector=f"{TRACK_LABEL}=canary").items if rs.spec.replicas),
               what=f"{pods} available green pods")


def test_a_service_moves_to_a_version_only_once_its_pods_are_available(web: Web) -> None:
    blue = Blue(web, green_pods=1)
    green_available(web, 1)
    refused = failure(blue.acts.select_pods, blue.select("web", Side.CANARY, ready=2))
    assert refused.type == errors.STABLE_NOT_ROLLED_OUT and not refused.non_retryable
    assert "1 of 2 pods" in refused.message
    assert web.core.read_namespaced_service("web", web.ns).spec.selector == {"app": "web"}  # untouched

    selection = run(blue.acts.select_pods, blue.select("web", Side.CANARY, ready=1))
    active = web.core.read_namespaced_service("web", web.ns)
    assert active.spec.selector == {"app": "web", "pod-template-hash": selection.pod_template_hash}
    assert active.metadata.annotations[SELECTOR_ANNOTATION] == '{"app": "web"}'
    green_ips = blue.ips(f"{TRACK_LABEL}=canary")
    eventually(lambda: blue.endpoint_ips("web") == green_ips, what="web's endpoints: the green pod only")

    version = active.metadata.resource_version
    run(blue.acts.select_pods, blue.select("web", Side.CANARY, ready=1))
    assert web.core.read_namespaced_service("web", web.ns).metadata.resource_version == version, "no second write"


def test_the_switch_is_guarded_and_the_users_selector_comes_back(web: Web, monkeypatch: pytest.MonkeyPatch) -> None:
    blue = Blue(web, green_pods=1)
    green_available(web, 1)
    run(blue.acts.select_pods, blue.select("web", Side.CANARY, ready=1))

    # Someone else writes the Service between the activity's read and its write: the write's
    # resourceVersion test fails, the activity reads again, and the other change is kept.
    real_patch = blue.acts._patch
    raced: list[str] = []

    def racing_patch(namespace: str, name: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        if not raced:
            raced.append(name)
            web.core.patch_namespaced_service(name, namespace, {"metadata": {"labels": {"team": "shop"}}})
        return real_patch(namespace, name, ops)

    monkeypatch.setattr(blue.acts, "_patch", racing_patch)
    back = run(blue.acts.select_pods, blue.select("web", Side.STABLE, ready=3))
    active = web.core.read_namespaced_service("web", web.ns)
    assert raced == ["web"] and active.metadata.labels == {"team": "shop"}
    assert active.spec.selector == {"app": "web", "pod-template-hash": back.pod_template_hash}
    blue_ips = blue.ips(f"app=web,!{TRACK_LABEL}")
    eventually(lambda: blue.endpoint_ips("web") == blue_ips and len(blue_ips) == 3, what="web on the 3 blue pods")

    run(blue.acts.restore_services, RestoreRequest(**blue.services()))
    given_back = web.core.read_namespaced_service("web", web.ns)
    assert given_back.spec.selector == {"app": "web"}
    assert SELECTOR_ANNOTATION not in (given_back.metadata.annotations or {})
    run(blue.acts.restore_services, RestoreRequest(**blue.services()))
    assert web.core.read_namespaced_service("web", web.ns).metadata.resource_version == (
        given_back.metadata.resource_version), "given back once"


def test_a_preview_service_is_made_like_the_active_one_and_removed_on_delete(web: Web) -> None:
    blue = Blue(web, green_pods=2)
    eventually(lambda: len(web.ready_pods(f"{TRACK_LABEL}=canary")) == 2, what="two Ready green pods")
    eventually(lambda: run(blue.acts.select_pods, blue.select("web-preview", Side.CANARY, ready=2)),
               what="the preview Service made")
    preview = web.core.read_namespaced_service("web-preview", web.ns)
    assert preview.metadata.labels == {JOB_KEY: JOB}
    assert preview.metadata.owner_references[0].name == "web"
    assert [(p.port, p.target_port) for p in preview.spec.ports] == [(80, 8080)]  # the active Service's ports
    green_ips = blue.ips(f"{TRACK_LABEL}=canary")
    eventually(lambda: blue.endpoint_ips("web-preview") == green_ips, what="web-preview on the green pods")
    assert web.core.read_namespaced_service("web", web.ns).spec.selector == {"app": "web"}

    run(blue.acts.restore_services, RestoreRequest(**blue.services(), remove_preview=True))
    assert {s.metadata.name for s in web.core.list_namespaced_service(web.ns).items} == {"web"}


def test_services_that_cannot_carry_a_release_are_refused_naming_the_field(web: Web) -> None:
    acts = BlueGreenActivities(web.api)
    request = {"namespace": web.ns, "job": JOB, "workload": "web"}
    missing = failure(acts.check_blue_green, BlueGreenServices(**request, active_service="web-live"))
    assert missing.type == errors.ROUTER_CONFIG_INVALID and missing.non_retryable
    assert missing.details == ("blueGreen.activeService",) and "web-live" in missing.message
    web.core.create_namespaced_service(web.ns, service("other", selector={"app": "other"}))
    elsewhere = failure(acts.check_blue_green, BlueGreenServices(**request, active_service="other"))
    assert elsewhere.details == ("blueGreen.activeService",) and "does not select" in elsewhere.message
    run(acts.check_blue_green, BlueGreenServices(**request, active_service="web", preview_service="web-preview"))
