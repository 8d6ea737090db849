"""watch_workload against the real cluster: what counts as a change, how fast, and cancellation."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future

import pytest
from kubernetes import client, watch
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from temporalio.exceptions import CancelledError
from temporalio.testing import ActivityEnvironment

import activities.kube
from activities.kube import KubeActivities
from tests.kube_helpers import deployment
from workflows.models import WatchRequest, WorkloadChange, WorkloadRequest, WorkloadSnapshot

pytestmark = pytest.mark.cluster


class Watched:
    """A Deployment ``web`` and a watch on it running in a thread, as a worker would run it."""

    def __init__(self, api: ApiClient, namespace: str) -> None:
        self.ns, self.apps = namespace, client.AppsV1Api(api)
        self.acts = KubeActivities(api)
        self.apps.create_namespaced_deployment(namespace, deployment("web", image="registry.local/web:1"))
        self.env = ActivityEnvironment()
        self.heartbeats: list[object] = []
        self.env.on_heartbeat = lambda *details: self.heartbeats.append(details[0] if details else None)
        self.done_at: float | None = None

    def snapshot(self) -> WorkloadSnapshot:
        request = WorkloadRequest(namespace=self.ns, name="web", job="j")
        return self.env.run(self.acts.inspect_workload, request)

    def start(self, *, known_replicas: int | None = None) -> Future[WorkloadChange]:
        snap = self.snapshot()
        request = WatchRequest(namespace=self.ns, name="web", job="j", known_hash=snap.template_hash,
                               known_replicas=known_replicas, resource_version=snap.resource_version)
        future: Future[WorkloadChange] = Future()

        def run() -> None:
            try:
                change = self.env.run(self.acts.watch_workload, request)
            except BaseException as error:
                self.done_at = time.monotonic()
                future.set_exception(error)
            else:
                self.done_at = time.monotonic()
                future.set_result(change)

        threading.Thread(target=run, daemon=True).start()
        time.sleep(0.5)  # let it list and open its watch
        return future

    def patch(self, body: dict[str, object]) -> float:
        sent = time.monotonic()
        self.apps.patch_namespaced_deployment("web", self.ns, body)
        return sent


@pytest.fixture
def watched(kube_api: ApiClient, namespace: str) -> Iterator[Watched]:
    w = Watched(kube_api, namespace)
    yield w
    w.env.cancel()


def _image(tag: str) -> dict[str, object]:
    container = {"name": "app", "image": f"registry.local/web:{tag}"}
    return {"spec": {"template": {"spec": {"containers": [container]}}}}


def _still_running(future: Future[WorkloadChange], seconds: float) -> bool:
    time.sleep(seconds)
    return not future.done()


def test_watch_returns_template_within_a_second_of_an_image_edit(watched: Watched) -> None:
    future = watched.start()
    assert _still_running(future, 0.5)
    edited_at: list[float] = []

    def edit() -> None:  # from another thread, as a user's kubectl would
        edited_at.append(time.monotonic())
        watched.patch(_image("2"))

    threading.Timer(0.2, edit).start()
    change = future.result(timeout=5)
    assert watched.done_at is not None and edited_at
    assert watched.done_at - edited_at[0] < 1.0
    assert change.kind == "template"
    assert change.snapshot is not None and change.snapshot.images == {"app": "registry.local/web:2"}
    current = watched.snapshot()  # the same version; status updates may have moved resourceVersion on
    assert change.snapshot.model_copy(update={"resource_version": current.resource_version}) == current


def test_watch_ignores_metadata_labels_and_replicas_unless_told(watched: Watched) -> None:
    future = watched.start()
    watched.patch({"metadata": {"labels": {"team": "blue"}, "annotations": {"note": "hello"}}})
    watched.patch({"spec": {"replicas": 5}})
    assert _still_running(future, 1.5)
    assert watched.heartbeats and all(isinstance(h, str) and h for h in watched.heartbeats)
    watched.patch(_image("3"))
    change = future.result(timeout=5)
    assert change.kind == "template" and change.snapshot is not None and change.snapshot.replicas == 5


def test_watch_reports_replicas_only_when_it_knows_them(watched: Watched) -> None:
    future = watched.start(known_replicas=3)
    watched.patch({"metadata": {"labels": {"team": "blue"}}})
    assert _still_running(future, 1.0)
    edited_at = watched.patch({"spec": {"replicas": 4}})
    change = future.result(timeout=5)
    assert change.kind == "replicas" and change.snapshot is not None and change.snapshot.replicas == 4
    assert watched.done_at is not None and watched.done_at - edited_at < 1.0


def test_watch_returns_at_once_when_the_deployment_already_differs(watched: Watched) -> None:
    stale = watched.snapshot().template_hash
    watched.patch(_image("2"))
    request = WatchRequest(namespace=watched.ns, name="web", job="j", known_hash=stale)
    change = watched.env.run(watched.acts.watch_workload, request)
    assert change.kind == "template" and change.snapshot is not None
    assert change.snapshot.template_hash != stale


def test_watch_reports_a_deleted_deployment(watched: Watched) -> None:
    future = watched.start()
    watched.apps.delete_namespaced_deployment("web", watched.ns)
    assert future.result(timeout=5) == WorkloadChange(kind="deleted")
    gone = WatchRequest(namespace=watched.ns, name="web", job="j", known_hash="x")
    assert watched.env.run(watched.acts.watch_workload, gone).kind == "deleted"


def test_watch_cancellation_ends_it_promptly(watched: Watched) -> None:
    future = watched.start()
    assert _still_running(future, 1.0)
    cancelled_at = time.monotonic()
    watched.env.cancel()
    with pytest.raises(CancelledError):
        future.result(timeout=5)
    assert watched.done_at is not None and watched.done_at - cancelled_at < 1.5


def test_watch_survives_server_timeouts_and_keeps_heartbeating(kube_api: ApiClient, namespace: str) -> None:
    w = Watched(kube_api, namespace)
    w.acts = KubeActivities(kube_api, watch_seconds=1)
    future = w.start()
    assert _still_running(future, 3.5)  # several watch requests have ended by now
    assert len(w.heartbeats) >= 5 and all(isinstance(h, str) and h for h in w.heartbeats)
    w.patch(_image("2"))
    assert future.result(timeout=5).kind == "template"


def test_watch_lists_again_after_410_gone(kube_api: ApiClient, namespace: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    class ExpiringWatch(watch.Watch):  # type: ignore[misc]
        """The first watch request finds its resourceVersion compacted away."""

        def stream(self, func: Callable[..., object], *args: object, **kwargs: object) -> Iterator[object]:
            calls.append(str(kwargs["resource_version"]))
            if len(calls) == 1:
                raise ApiException(status=410, reason="Expired: too old resource version")
            return super().stream(func, *args, **kwargs)  # type: ignore[no-any-return]

    monkeypatch.setattr(activities.kube.watch, "Watch", ExpiringWatch)
    w = Watched(kube_api, namespace)
    future = w.start()
    assert _still_running(future, 0.5)
    w.patch(_image("2"))
    assert future.result(timeout=5).kind == "template"
    assert len(calls) == 2, "one expired watch, then a fresh list and a new watch"
