"""One watch per worker on every Deployment a job holds, turned into reports to the jobs.

It also keeps the newest copy of each of those Deployments and of their canary Deployments:
the waits of a release (canary Ready, stable rolled out) read that copy and sleep until it
changes, instead of each opening watches and reading the API server in a loop.

A job no longer keeps a watch of its own (a thread, an activity slot and a connection for as
long as it lives): the worker lists and watches the Deployments labelled with a job's name,
and reports one to its job only when its spec differs from what the job stamped on it
(``KNOWN_ANNOTATION``, written beside every write the job makes). So the job's own writes are
never echoed back, a quiet fleet costs no signals at all, and a (re)list after a restart or a
watch gap reports exactly the edits nobody has told the jobs about yet.

Several workers may each run one: a report is an idempotent "this is the Deployment now",
which the job compares with what it knows, so a duplicate changes nothing.

The watch runs in one thread with the synchronous client; reports go to ``report`` (which
must not block). ``stop`` closes the connection, so the thread ends at once and can be joined.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from activities.kube import REQUEST_TIMEOUT, snapshot
from activities.templates import CANARY_TRACK, JOB_KEY, KNOWN_ANNOTATION, TRACK_LABEL, WATCH_SELECTOR, known_value
from workflows.models import WorkloadChange

Obj = dict[str, Any]
log = logging.getLogger(__name__)

# A watch request lasts this long before it is renewed from its resourceVersion; bookmarks keep
# that resourceVersion fresh meanwhile, so a renewal does not need a list.
WATCH_SECONDS = 300
# After an error (API server away), wait this long, doubling up to the maximum, then list again.
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 15.0
RELABEL_ATTEMPTS = 5
CANARY_SETS_SELECTOR = f"{JOB_KEY},{TRACK_LABEL}={CANARY_TRACK}"  # the jobs' canary ReplicaSets


@dataclass(frozen=True)
class Seen:
    """What the informer last saw of one Deployment: enough to skip status-only updates."""

    job: str
    uid: str
    generation: int


Report = Callable[[str, str, WorkloadChange], None]  # namespace, job, change


def differs_from_known(deployment: Obj) -> bool:
    """True when the Deployment's spec is not what its job last stamped on it."""
    current = snapshot(deployment)
    stamped = ((deployment.get("metadata") or {}).get("annotations") or {}).get(KNOWN_ANNOTATION)
    return stamped != known_value(current.template_hash, current.replicas)


class DeploymentInformer:
    """List and watch the Deployments jobs hold (all namespaces, or the ones given).

    ``replica_sets=True`` makes it an informer of the jobs' canary ReplicaSets instead
    (``activities/canary_set.py``): a cache for the canary's waits, with nothing to report.
    """

    def __init__(self, api: ApiClient, report: Report | None, *, namespaces: Sequence[str] | None = None,
                 watch_seconds: int = WATCH_SECONDS, replica_sets: bool = False) -> None:
        self._apps = client.AppsV1Api(api)
        self._reports = report is not None
        self._report: Report = report or (lambda *_: None)
        self._kind = "ReplicaSets" if replica_sets else "Deployments"
        if replica_sets:
            self._selector = CANARY_SETS_SELECTOR
            self._list_all, self._list_in = (self._apps.list_replica_set_for_all_namespaces,
                                             self._apps.list_namespaced_replica_set)
        else:
            self._selector = WATCH_SELECTOR
            self._list_all, self._list_in = (self._apps.list_deployment_for_all_namespaces,
                                             self._apps.list_namespaced_deployment)
        self._namespaces = list(namespaces) if namespaces else [None]
        self._watch_seconds = watch_seconds
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._responses: dict[str | None, Any] = {}
        self._lock = threading.Lock()
        self.synced = threading.Event()  # set once every namespace has been listed
        self._listed: set[str | None] = set()
        self._objects: dict[tuple[str, str], Obj] = {}  # the newest copy of each Deployment seen
        self._waiters: dict[tuple[str, str], list[threading.Event]] = {}

    # -- the cache the waits read ---------------------------------------------------------------

    def get(self, namespace: str, name: str) -> Obj | None:
        """The newest copy of a watched Deployment; None when the informer has none (not authoritative)."""
        with self._lock:
            return self._objects.get((namespace, name))

    def wait_change(self, namespace: str, name: str, version: str | None, timeout: float) -> None:
        """Block until the copy of ``namespace/name`` is other than ``version``, at most ``timeout`` s."""
        key, changed = (namespace, name), threading.Event()
        with self._lock:
            if _version(self._objects.get(key)) != version:
                return
            self._waiters.setdefault(key, []).append(changed)
        try:
            changed.wait(timeout)
        finally:
            with self._lock:
                waiting = self._waiters.get(key, [])
                if changed in waiting:
                    waiting.remove(changed)
                if not waiting:
                    self._waiters.pop(key, None)

    def _store(self, key: tuple[str, str], deployment: Obj | None) -> None:
        with self._lock:
            if deployment is None:
                self._objects.pop(key, None)
            else:
                # The field-ownership ledger is most of a Deployment's size and nothing here reads
                # it: a 1000-job worker keeps tens of MiB less without it.
                (deployment.get("metadata") or {}).pop("managedFields", None)
                self._objects[key] = deployment
            for waiter in self._waiters.get(key, []):
                waiter.set()

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start one watching thread per namespace (one in all for the whole cluster)."""
        for namespace in self._namespaces:
            thread = threading.Thread(target=self._run, args=(namespace,), daemon=True,
                                      name=f"informer-{namespace or 'all'}")
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """End the watches now (their connections are closed) and join the threads."""
        with self._lock:
            self._stopping.set()
            responses = list(self._responses.values())
        for response in responses:
            try:
                response.shutdown()  # wakes the thread blocked reading it
            except Exception:  # a dead connection is as good as closed
                pass
        for thread in self._threads:
            thread.join(timeout)

    # -- the loop -------------------------------------------------------------------------------

    def _run(self, namespace: str | None) -> None:
        seen: dict[tuple[str, str], Seen] = {}
        backoff = BACKOFF_FIRST
        while not self._stopping.is_set():
            try:
                version: str | None = self._list(namespace, seen)
                backoff = BACKOFF_FIRST
                while not self._stopping.is_set() and version is not None:
                    version = self._watch(namespace, version, seen)
            except Exception as error:  # any failure: wait, then list again
                if self._stopping.is_set():
                    return
                log.warning("watching %s%s failed (%s); listing again in %.1f s", self._kind,
                            f" in {namespace}" if namespace else "", error, backoff)
                self._stopping.wait(backoff)
                backoff = min(BACKOFF_MAX, backoff * 2)

    def _list(self, namespace: str | None, seen: dict[tuple[str, str], Seen]) -> str:
        """List, report what differs, and forget what is gone; the list's resourceVersion."""
        kwargs: dict[str, Any] = {"label_selector": self._selector, "_preload_content": False,
                                  "_request_timeout": REQUEST_TIMEOUT}
        response = self._list_all(**kwargs) if namespace is None else self._list_in(namespace, **kwargs)
        listed = json.loads(response.data)
        present: set[tuple[str, str]] = set()
        for item in listed.get("items") or []:
            present.add(_key(item))
            self._store(_key(item), item)
            self._on_present(item, seen)
        with self._lock:
            gone = [k for k in self._objects if (namespace is None or k[0] == namespace) and k not in present]
        for key in gone:
            self._store(key, None)
        for key in [k for k in seen if k not in present]:
            self._on_absent(key, seen.pop(key))  # only what _on_present saw: never with nothing to report to
        self._listed.add(namespace)
        if len(self._listed) == len(self._namespaces):
            self.synced.set()
        return str(listed["metadata"]["resourceVersion"])

    def _watch(self, namespace: str | None, version: str, seen: dict[tuple[str, str], Seen]) -> str | None:
        """Follow one watch request; the resourceVersion to go on from, None to list again."""
        kwargs: dict[str, Any] = {
            "label_selector": self._selector, "watch": True, "resource_version": version,
            "allow_watch_bookmarks": True, "timeout_seconds": self._watch_seconds, "_preload_content": False,
            "_request_timeout": (REQUEST_TIMEOUT, self._watch_seconds + REQUEST_TIMEOUT)}
        response = self._list_all(**kwargs) if namespace is None else self._list_in(namespace, **kwargs)
        with self._lock:
            if self._stopping.is_set():  # stop() came while the request was on its way
                _discard(response)
                return None
            self._responses[namespace] = response
        try:
            for event in _events(response):
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:  # Gone: our resourceVersion is too old
                        return None
                    raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if kind in ("ADDED", "MODIFIED"):
                    self._store(_key(obj), obj)
                    self._on_present(obj, seen)
                elif kind == "DELETED":
                    key = _key(obj)
                    self._store(key, None)
                    gone = seen.pop(key, None)
                    if self._reports and not _is_canary(obj):
                        self._on_absent(key, gone or Seen(_job(obj), "", 0))
        finally:
            with self._lock:
                self._responses.pop(namespace, None)
            _discard(response)
        return version

    # -- what each event means for a job ---------------------------------------------------------

    def _on_present(self, deployment: Obj, seen: dict[tuple[str, str], Seen]) -> None:
        if not self._reports or _is_canary(deployment):
            return  # cached for the waits; the job made it and needs no report of it
        key, meta = _key(deployment), deployment["metadata"]
        now = Seen(_job(deployment), str(meta.get("uid") or ""), int(meta.get("generation") or 0))
        before = seen.get(key)
        seen[key] = now
        if before == now:
            return  # a status update (or a relist after a gap): the spec did not move
        if before is not None and before.uid != now.uid:
            self._report(key[0], before.job, WorkloadChange(kind="deleted"))
        if differs_from_known(deployment):
            self._report(key[0], now.job, WorkloadChange(kind="observed", snapshot=snapshot(deployment)))

    def _on_absent(self, key: tuple[str, str], last: Seen) -> None:
        """Deleted, or only out of the selector (its label removed): read it to tell which."""
        namespace, name = key
        for _ in range(RELABEL_ATTEMPTS):
            try:
                response = self._apps.read_namespaced_deployment(name, namespace, _preload_content=False,
                                                                  _request_timeout=REQUEST_TIMEOUT)
            except ApiException as error:
                if error.status == 404:
                    self._report(namespace, last.job, WorkloadChange(kind="deleted"))
                    return
                raise
            deployment = json.loads(response.data)
            owner = ((deployment.get("metadata") or {}).get("annotations") or {}).get(JOB_KEY)
            if not last.job or owner != last.job:
                return  # not the job's any more (detached): nothing to report
            # Still the job's, but someone removed the label: put it back, so the watch sees it
            # again (its ADDED event follows and is compared as usual).
            body = {"metadata": {"labels": {JOB_KEY: owner},
                                 "resourceVersion": deployment["metadata"]["resourceVersion"]}}
            try:
                self._apps.patch_namespaced_deployment(name, namespace, body, _request_timeout=REQUEST_TIMEOUT)
                return
            except ApiException as error:
                if error.status == 404:
                    continue  # gone meanwhile: the next read says so
                if error.status != 409:
                    raise


def _discard(response: Any) -> None:
    """Close a watch response's connection before the pool gets it back.

    Left mid-stream (a 410, a stop), the connection still holds unread chunks; handed back open,
    the next request on it (an activity's, the pool is shared) would read them as its answer.
    """
    response.close()
    response.release_conn()


def _events(response: Any) -> Iterator[Obj]:
    for line in iter_resp_lines(response):
        if line:
            yield json.loads(line)


def _is_canary(deployment: Obj) -> bool:
    return ((deployment.get("metadata") or {}).get("labels") or {}).get(TRACK_LABEL) == CANARY_TRACK


def _version(deployment: Obj | None) -> str | None:
    return None if deployment is None else str((deployment.get("metadata") or {}).get("resourceVersion"))


def _key(deployment: Obj) -> tuple[str, str]:
    meta = deployment.get("metadata") or {}
    return str(meta.get("namespace")), str(meta.get("name"))


def _job(deployment: Obj) -> str:
    return str(((deployment.get("metadata") or {}).get("labels") or {}).get(JOB_KEY) or "")

