"""The worker's shared watch against the real API server: what it reports to which job, and when.

A report is due only when a Deployment's spec differs from what its job stamped on it, so the
job's own writes and the controller's status updates must stay silent, while a user's edit, a
deletion and an edit made while no informer ran must all be reported.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from kubernetes import client
from kubernetes.client import ApiClient
from temporalio.testing import ActivityEnvironment

from activities.informer import DeploymentInformer
from activities.kube import KubeActivities
from activities.templates import JOB_KEY, KNOWN_ANNOTATION
from tests.kube_helpers import deployment, eventually
from workflows.models import AttachRequest, LabelRequest, ScaleRequest, WorkloadChange

pytestmark = pytest.mark.cluster


class Reports:
    """What an informer reported, in order, as (namespace, job, change)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str, WorkloadChange]] = []
        self._lock = threading.Lock()

    def __call__(self, namespace: str, job: str, change: WorkloadChange) -> None:
        with self._lock:
            self.items.append((namespace, job, change))

    def kinds(self, namespace: str) -> list[tuple[str, str]]:
        with self._lock:
            return [(job, change.kind) for ns, job, change in self.items if ns == namespace]


class Held:
    """A Deployment ``web`` attached by job ``shop`` through the real activity."""

    def __init__(self, api: ApiClient, namespace: str) -> None:
        self.api, self.ns = api, namespace
        self.apps = client.AppsV1Api(api)
        self.acts = KubeActivities(api)
        self.apps.create_namespaced_deployment(namespace, deployment("web", image="registry.local/web:1"))
        eventually(lambda: (self.apps.read_namespaced_deployment_status("web", namespace).status
                            .available_replicas or 0) >= 1, what="web available")
        self.snapshot = ActivityEnvironment().run(self.acts.attach_workload,
                                                  AttachRequest(namespace=namespace, name="web", job="shop"))

    def edit(self, image: str) -> None:
        body = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}}
        self.apps.patch_namespaced_deployment("web", self.ns, body)

    def informer(self, reports: Reports) -> DeploymentInformer:
        informer = DeploymentInformer(self.api, reports, namespaces=[self.ns])
        informer.start()
        assert informer.synced.wait(10), "the informer never finished its first list"
        return informer


@pytest.fixture
def held(kube_api: ApiClient, namespace: str) -> Iterator[Held]:
    yield Held(kube_api, namespace)


def settle() -> None:
    time.sleep(1.0)  # long enough for any event the API server was going to send


def test_attach_labels_the_deployment_and_a_quiet_job_costs_no_report(held: Held) -> None:
    labels = held.apps.read_namespaced_deployment("web", held.ns).metadata.labels
    assert labels[JOB_KEY] == "shop"
    reports = Reports()
    informer = held.informer(reports)
    try:
        # The controller keeps writing status (pods becoming ready); none of it is news to the job.
        held.apps.patch_namespaced_deployment("web", held.ns, {"metadata": {"annotations": {"x": "y"}}})
        settle()
        assert reports.kinds(held.ns) == []
    finally:
        informer.stop()


def test_a_user_edit_is_reported_to_its_job_with_the_new_template(held: Held) -> None:
    reports = Reports()
    informer = held.informer(reports)
    try:
        held.edit("registry.local/web:2")
        eventually(lambda: reports.kinds(held.ns) == [("shop", "observed")], what="the edit reported")
        change = reports.items[-1][2]
        assert change.snapshot is not None
        assert change.snapshot.images == {"app": "registry.local/web:2"}
        assert change.snapshot.generation > held.snapshot.generation
        assert change.snapshot.uid == held.snapshot.uid
    finally:
        informer.stop()


def test_the_jobs_own_stamped_write_is_not_echoed_back(held: Held) -> None:
    reports = Reports()
    informer = held.informer(reports)
    try:
        scale = ScaleRequest(namespace=held.ns, name="web", job="shop", replicas=3,
                             known_hash=held.snapshot.template_hash)
        ActivityEnvironment().run(held.acts.scale_stable, scale)
        settle()
        assert reports.kinds(held.ns) == []
        # The same scale by a user (no stamp) is news.
        held.apps.patch_namespaced_deployment("web", held.ns, {"spec": {"replicas": 5}})
        eventually(lambda: reports.kinds(held.ns) == [("shop", "observed")], what="the user's scale reported")
        assert reports.items[-1][2].snapshot is not None and reports.items[-1][2].snapshot.replicas == 5
    finally:
        informer.stop()


def test_an_edit_made_while_no_informer_ran_is_reported_by_the_next_list(held: Held) -> None:
    first = Reports()
    held.informer(first).stop()
    held.edit("registry.local/web:3")  # the worker is down
    reports = Reports()
    informer = held.informer(reports)
    try:
        assert reports.kinds(held.ns) == [("shop", "observed")]
        assert first.kinds(held.ns) == []
    finally:
        informer.stop()


def test_a_deleted_deployment_is_reported_and_a_removed_label_is_put_back(held: Held) -> None:
    reports = Reports()
    informer = held.informer(reports)
    try:
        held.apps.patch_namespaced_deployment("web", held.ns, {"metadata": {"labels": {JOB_KEY: None}}})
        eventually(lambda: JOB_KEY in (held.apps.read_namespaced_deployment("web", held.ns).metadata.labels or {}),
                   what="the job label put back")
        settle()
        assert ("shop", "deleted") not in reports.kinds(held.ns)
        held.apps.delete_namespaced_deployment("web", held.ns)
        eventually(lambda: ("shop", "deleted") in reports.kinds(held.ns), what="the deletion reported")
    finally:
        informer.stop()


def test_stop_ends_the_watch_thread_at_once(held: Held) -> None:
    informer = held.informer(Reports())
    informer.stop(timeout=5)  # the watch request itself would last minutes
    assert not [t for t in threading.enumerate() if t.name == f"informer-{held.ns}"]


def test_a_job_attached_before_labels_gets_one_and_an_edit_it_never_saw_is_reported(held: Held) -> None:
    # As attached by older code: the job's annotation, no label, no stamp.
    held.apps.patch_namespaced_deployment("web", held.ns, {"metadata": {
        "labels": {JOB_KEY: None}, "annotations": {KNOWN_ANNOTATION: None}}})
    # The informer's first list may be answered from the API server's watch cache, which can
    # trail a write just made (seen once in a busy run): start it once a list agrees.
    eventually(lambda: held.apps.list_namespaced_deployment(held.ns, label_selector=JOB_KEY).items == [],
               what="the label gone from a list")
    reports = Reports()
    informer = held.informer(reports)
    try:
        held.edit("registry.local/web:2")  # made after the job last looked
        settle()
        assert reports.kinds(held.ns) == []  # out of the shared watch's sight so far
        label = LabelRequest(namespace=held.ns, name="web", job="shop", known_hash=held.snapshot.template_hash)
        ActivityEnvironment().run(held.acts.label_workload, label)
        eventually(lambda: reports.kinds(held.ns) == [("shop", "observed")], what="the unseen edit reported")
        change = reports.items[-1][2]
        assert change.snapshot is not None and change.snapshot.images == {"app": "registry.local/web:2"}
    finally:
        informer.stop()
