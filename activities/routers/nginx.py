"""NGINX: a canary Ingress of the job's own, beside the user's, weighed by annotations.

ingress-nginx splits traffic between an Ingress and a "canary" Ingress for the same host and
path (``nginx.ingress.kubernetes.io/canary: "true"``, ``canary-weight``). The user's Ingress
(``traffic.nginx.stableIngress``) stays theirs, untouched; the job derives the canary Ingress
from it at every write (same class, hosts and paths, but only the paths whose backend is the
stable Service, sent to the canary Service instead), so an edit of the user's is followed.

The canary Ingress exists only while it routes something: a write at weight 0 with no header
route deletes it, so between releases, after a terminate and after ``delete`` nothing of the
job's is left. It carries the job label and an ownerReference to the user's Ingress (deleting
that removes it). A header route is ``canary-by-header`` (with ``-value`` or ``-pattern``) or
``canary-by-cookie``: ingress-nginx holds one such condition per canary Ingress.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import Any

from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from temporalio.exceptions import ApplicationError

from activities import errors
from activities.errors import kube_errors, not_found
from activities.routers.base import CONFLICT_ATTEMPTS, FIELD_MANAGER, REQUEST_TIMEOUT, Obj, config_error
from activities.templates import JOB_KEY
from workflows.header_route import HeaderRoute
from workflows.routing import RouterWeights, RouteWeight
from workflows.traffic_spec import Traffic

PREFIX = "nginx.ingress.kubernetes.io/"
CANARY = PREFIX + "canary"
WEIGHT = PREFIX + "canary-weight"
BY_HEADER, BY_VALUE, BY_PATTERN, BY_COOKIE = (PREFIX + "canary-by-header", PREFIX + "canary-by-header-value",
                                              PREFIX + "canary-by-header-pattern", PREFIX + "canary-by-cookie")
HEADER_ROUTE_ANNOTATION = "canary-delivery.dev/header-route"  # the header route's name, read back
CLASS_ANNOTATION = "kubernetes.io/ingress.class"  # the class, as older Ingresses name it
INGRESS_FIELD = "traffic.nginx.stableIngress"
SUFFIX = "-canary"


def canary_ingress_name(stable_ingress: str) -> str:
    """``<stableIngress>-canary``, within an object name's 253 characters."""
    return stable_ingress[: 253 - len(SUFFIX)].rstrip("-.") + SUFFIX


class NginxRouter:
    """The job's canary Ingress beside the user's ``traffic.nginx.stableIngress``."""

    def __init__(self, api: ApiClient, namespace: str, job: str, traffic: Traffic) -> None:
        assert traffic.nginx is not None and traffic.stable_service and traffic.canary_service  # the spec's rule
        self._net = client.NetworkingV1Api(api)
        self.namespace, self.job = namespace, job
        self.stable_ingress, self.stable_service, self.canary_service = (
            traffic.nginx.stable_ingress, traffic.stable_service, traffic.canary_service)
        self.extra = {key if "/" in key else PREFIX + key: value
                      for key, value in traffic.nginx.additional_ingress_annotations.items()}
        self.name = canary_ingress_name(self.stable_ingress)

    # -- Router --------------------------------------------------------------------------------

    def check(self) -> None:
        """The user's Ingress exists, sends somewhere to the stable Service, and the canary's name is free."""
        self.derive(self._user_ingress(), 0, [])
        self._ours(self._read(self.name))

    def read_weights(self) -> RouterWeights:
        """The canary Ingress's weight; none means all traffic on stable."""
        return self._weights(self._ours(self._read(self.name)))

    def set_weight(self, canary: int, header_routes: Sequence[HeaderRoute] = ()) -> RouterWeights:
        """Create, update or (at weight 0, no header route) delete the canary Ingress; answer what it holds."""
        for attempt in range(CONFLICT_ATTEMPTS):
            existing = self._ours(self._read(self.name))
            if canary == 0 and not header_routes:
                if existing is not None:
                    self._delete(existing)
                return self._weights(None)
            body = self.derive(self._user_ingress(), canary, header_routes)
            if existing is not None and all(existing["metadata"].get(key) == body["metadata"][key]
                                            for key in ("annotations", "labels")) and (
                    existing.get("spec") == body["spec"]):
                return self._weights(existing)  # held already: no write
            try:
                return self._weights(self._write(body, existing))
            except ApplicationError as error:
                if error.type != errors.KUBERNETES_CONFLICT or attempt == CONFLICT_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def cleanup(self) -> None:
        """No canary Ingress: all traffic on the user's (whether or not it is still there)."""
        self.set_weight(0)

    # -- the canary Ingress ------------------------------------------------------------------------

    def derive(self, user: Obj, canary: int, header_routes: Sequence[HeaderRoute]) -> Obj:
        """The canary Ingress for ``user``'s Ingress at ``canary`` percent, with the header route if any."""
        meta, spec = user["metadata"], user.get("spec") or {}
        if (meta.get("annotations") or {}).get(CANARY) == "true":
            raise config_error(INGRESS_FIELD, f"Ingress {self.stable_ingress} is itself a canary Ingress; name the "
                                              "Ingress that serves stable traffic")
        rules = []
        for rule in spec.get("rules") or []:
            paths = [self._to_canary(path) for path in (rule.get("http") or {}).get("paths") or []
                     if ((path.get("backend") or {}).get("service") or {}).get("name") == self.stable_service]
            if paths:
                rules.append({**({"host": rule["host"]} if rule.get("host") else {}), "http": {"paths": paths}})
        if not rules:
            raise config_error(INGRESS_FIELD, (
                f"no path of Ingress {self.namespace}/{self.stable_ingress} has Service {self.stable_service!r} "
                "(traffic.stableService) as its backend; the canary Ingress takes those paths"))
        annotations = {**self.extra, CANARY: "true", WEIGHT: str(canary)}
        if CLASS_ANNOTATION in (meta.get("annotations") or {}):
            annotations[CLASS_ANNOTATION] = meta["annotations"][CLASS_ANNOTATION]
        for key in (BY_HEADER, BY_VALUE, BY_PATTERN, BY_COOKIE):
            annotations.pop(key, None)  # the job's header route, or none: never one the user left in extra
        annotations.update(header_annotations(header_routes))
        if header_routes:
            annotations[HEADER_ROUTE_ANNOTATION] = header_routes[0].name
        new_spec: Obj = {"rules": rules}
        if spec.get("ingressClassName"):
            new_spec["ingressClassName"] = spec["ingressClassName"]
        return {
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": {JOB_KEY: self.job},
                         "annotations": annotations,
                         "ownerReferences": [{"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                                              "name": meta["name"], "uid": meta["uid"]}]},
            "spec": new_spec,
        }

    def _to_canary(self, path: Obj) -> Obj:
        path = copy.deepcopy(path)
        path["backend"]["service"]["name"] = self.canary_service
        return path

    def _weights(self, ingress: Obj | None) -> RouterWeights:
        annotations = (ingress or {}).get("metadata", {}).get("annotations") or {}
        try:
            canary = max(0, min(100, int(annotations.get(WEIGHT, "0")))) if ingress is not None else 0
        except ValueError:
            canary = 0  # ingress-nginx reads a weight it cannot parse as none
        header = annotations.get(HEADER_ROUTE_ANNOTATION)
        return RouterWeights(routes=[RouteWeight(route=self.name, stable=100 - canary, canary=canary)],
                             header_routes=[header] if header else [])

    # -- reading and writing -----------------------------------------------------------------------

    @staticmethod
    def _json(response: Any) -> Obj:
        data: Obj = json.loads(response.data)
        return data

    def _read(self, name: str) -> Obj | None:
        with kube_errors(f"read Ingress {self.namespace}/{name}"):
            try:
                return self._json(self._net.read_namespaced_ingress(
                    name, self.namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT))
            except ApiException as error:
                if not_found(error):
                    return None
                raise

    def _user_ingress(self) -> Obj:
        user = self._read(self.stable_ingress)
        if user is None:
            raise config_error(INGRESS_FIELD, f"no Ingress {self.stable_ingress!r} in namespace {self.namespace}")
        return user

    def _ours(self, ingress: Obj | None) -> Obj | None:
        """``ingress`` if the job made it; an Ingress of someone else's under the canary's name is refused."""
        if ingress is not None and (ingress["metadata"].get("labels") or {}).get(JOB_KEY) != self.job:
            raise config_error(INGRESS_FIELD, (
                f"Ingress {self.namespace}/{self.name} (the canary Ingress of {self.stable_ingress}) exists and is "
                "not this job's; the job will not take it over"))
        return ingress

    def _write(self, body: Obj, existing: Obj | None) -> Obj:
        """Create, or replace guarded by the resourceVersion read (a 409 means: read again)."""
        if existing is None:
            with kube_errors(f"create Ingress {self.namespace}/{self.name}"):
                return self._json(self._net.create_namespaced_ingress(
                    self.namespace, body, field_manager=FIELD_MANAGER, _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT))
        body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
        with kube_errors(f"update Ingress {self.namespace}/{self.name}"):
            return self._json(self._net.replace_namespaced_ingress(
                self.name, self.namespace, body, field_manager=FIELD_MANAGER, _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT))

    def _delete(self, existing: Obj) -> None:
        with kube_errors(f"delete Ingress {self.namespace}/{self.name}"):
            try:
                self._net.delete_namespaced_ingress(
                    self.name, self.namespace, body=client.V1DeleteOptions(
                        preconditions=client.V1Preconditions(uid=existing["metadata"]["uid"])),
                    _request_timeout=REQUEST_TIMEOUT)
            except ApiException as error:
                if not not_found(error):
                    raise


def header_annotations(header_routes: Sequence[HeaderRoute]) -> dict[str, str]:
    """ingress-nginx's annotations for the one header route (the spec allows one, with one match)."""
    if not header_routes:
        return {}
    if len(header_routes) > 1 or len(header_routes[0].matches) != 1:
        raise ApplicationError("NGINX holds one header route with one match", type=errors.INVALID_REQUEST,
                               non_retryable=True)
    match = header_routes[0].matches[0]
    if match.cookie_name is not None:
        return {BY_COOKIE: match.cookie_name}
    assert match.header_name is not None and match.header_value is not None
    if match.header_value.exact is not None:
        return {BY_HEADER: match.header_name, BY_VALUE: match.header_value.exact}
    return {BY_HEADER: match.header_name, BY_PATTERN: match.header_value.as_regex()}
