"""A benchmark's own view of every Deployment in one namespace, kept current by one watch.

Asking each job "are you done?" a few times a second would send hundreds of queries through
Temporal to the very worker whose CPU is being measured. Judging from the cluster instead
costs the measured processes nothing: one list, then one watch, parsed as raw JSON (the
generated client's models cost a millisecond per object, too slow for thousands of events).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from kubernetes.watch.watch import iter_resp_lines

CANARY_SUFFIX = "-canary"


@dataclass(frozen=True)
class DeploymentView:
    """What the benchmark needs of one Deployment."""

    image: str
    generation: int
    observed_generation: int
    replicas: int  # spec
    updated: int
    available: int

    @classmethod
    def of(cls, obj: dict[str, Any]) -> DeploymentView:
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or [{}]
        return cls(
            image=str(containers[0].get("image", "")),
            generation=int(obj["metadata"].get("generation") or 0),
            observed_generation=int(status.get("observedGeneration") or 0),
            replicas=int(spec.get("replicas") or 0),
            updated=int(status.get("updatedReplicas") or 0),
            available=int(status.get("availableReplicas") or 0),
        )

    def rolled_out(self, image: str, replicas: int) -> bool:
        """The controller has seen this spec and ``replicas`` pods of ``image`` are available."""
        return (self.image == image and self.observed_generation >= self.generation
                and self.replicas == replicas and self.updated == replicas and self.available == replicas)


class DeploymentMirror:
    """Every Deployment of a namespace, by name, updated by a background watch thread."""

    def __init__(self, api: k8s.ApiClient, namespace: str) -> None:
        self.apps = k8s.AppsV1Api(api)
        self.namespace = namespace
        self.views: dict[str, DeploymentView] = {}
        # Names in the order they changed (a canary counts as its Deployment), so that a waiter
        # re-judges only what changed since it last looked, not a thousand names per event.
        self.changes: list[str] = []
        self.changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="deployment-mirror", daemon=True)

    def start(self) -> DeploymentMirror:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                version = self._list()
                self._watch(version)
            except Exception as error:  # a dropped watch or an expired version: list again
                if not self._stop.is_set():
                    print(f"deployment mirror: {type(error).__name__}: {error}; listing again", flush=True)
                    time.sleep(1)

    def _list(self) -> str:
        response = self.apps.list_namespaced_deployment(self.namespace, _preload_content=False)
        body = json.loads(response.data)
        with self.changed:
            self.views = {item["metadata"]["name"]: DeploymentView.of(item) for item in body["items"]}
            self.changes += [name.removesuffix(CANARY_SUFFIX) for name in self.views]
            self.changed.notify_all()
        return str(body["metadata"]["resourceVersion"])

    def _watch(self, version: str) -> None:
        while not self._stop.is_set():
            response = self.apps.list_namespaced_deployment(
                self.namespace, watch=True, resource_version=version, allow_watch_bookmarks=True,
                timeout_seconds=60, _preload_content=False)
            try:
                for line in iter_resp_lines(response):
                    event = json.loads(line)
                    obj = event["object"]
                    if event["type"] == "ERROR":
                        raise RuntimeError(f"watch error: {obj.get('message')}")
                    version = obj["metadata"]["resourceVersion"]
                    if event["type"] == "BOOKMARK":
                        continue
                    name = obj["metadata"]["name"]
                    with self.changed:
                        if event["type"] == "DELETED":
                            self.views.pop(name, None)
                        else:
                            self.views[name] = DeploymentView.of(obj)
                        self.changes.append(name.removesuffix(CANARY_SUFFIX))
                        self.changed.notify_all()
                    if self._stop.is_set():
                        return
            finally:
                with contextlib.suppress(Exception):
                    response.release_conn()

    def wait_all(self, names: Iterable[str], done: Callable[[str], bool], timeout: float,
                 progress: Callable[[int, int], None] | None = None) -> dict[str, float]:
        """Wait until ``done(name)`` holds for every name; the monotonic time each first held.

        Names still pending at the deadline are simply absent from the answer. ``done`` is
        called with the condition's lock held, so it reads ``views`` consistently.
        """
        pending, finished = set(names), {}
        deadline = time.monotonic() + timeout
        total = len(pending)
        with self.changed:
            candidates, seen = set(pending), len(self.changes)
            while pending and time.monotonic() < deadline:
                now = time.monotonic()
                newly = {name for name in candidates & pending if done(name)}
                for name in newly:
                    finished[name] = now
                pending -= newly
                if newly and progress is not None:
                    progress(len(finished), total)
                if pending:
                    self.changed.wait(timeout=min(1.0, max(0.0, deadline - now)))
                candidates, seen = set(self.changes[seen:]), len(self.changes)
        return finished

    def promoted(self, name: str, image: str, replicas: int) -> bool:
        """The job delivered ``image`` to its Deployment and its canary runs no pods.

        A Deployment the job holds paused keeps ``updatedReplicas`` at 0 after an edit until the
        job promotes it, so an edit the job has not even seen yet never reads as promoted.
        """
        view = self.views.get(name)
        canary = self.views.get(name + CANARY_SUFFIX)
        return (view is not None and view.rolled_out(image, replicas)
                and (canary is None or canary.replicas == 0))
