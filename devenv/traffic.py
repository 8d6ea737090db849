"""Simulated mesh traffic for KWOK pods, exported in Istio's metric names and labels.

KWOK pods run no containers, so nothing would ever answer a request and a canary judged by
PromQL would always see "no data". This module stands in for the mesh's telemetry (it is part
of the dev environment, not of the product): it reads which pods are Ready behind a Service,
pretends each received its share of a request rate, and exports what an Istio sidecar would
report as the destination, so the product's queries are the ones it would run against a
real mesh.

Traffic follows the cluster: the rate of each Service is split evenly over its Ready
endpoints (so the replica ratio is the traffic ratio, as with a plain Service), unless a
traffic router sends it: then the Services behind a VirtualService, an HTTPRoute or a canary
Ingress get the rate by the route's weights and header matches (:mod:`devenv.mesh_routes`).
A pod's behaviour comes from its annotations, i.e. from its Deployment's pod template:

    canary-delivery.dev/simulate-error-rate: "0.05"  # share of requests answered 500 (else 200)
    canary-delivery.dev/simulate-latency-ms: "250"   # typical latency, +-20 % (default 20)
    canary-delivery.dev/simulate-traffic: "0"        # weight of the pod's share; "0" = no requests

Exported series (per Service and pod, and per response code once one was answered)::

    istio_requests_total{reporter="destination", destination_workload, destination_workload_namespace,
                         destination_service, destination_service_name, destination_service_namespace,
                         destination_app, destination_version, response_code, pod, ...}
    istio_request_duration_milliseconds_bucket{..., le} / _sum / _count

``destination_workload`` is what Istio's sidecar injector names the pod's workload when the pod
is created, and the pod reports it for its whole life: the name of the ReplicaSet that made it,
less the pod's ``pod-template-hash`` (``web`` for the Deployment's pods, ``web-canary`` for the
canary's), even though one Service selects both. A pod made by something else reports its
owner's name, a bare pod its own. The simulator keeps the name it first gave each pod, so a pod
handed to another owner later (a promotion that reuses the canary's pods) still reports the
canary's name, as it would in a real mesh.

Counts are exact, not sampled: requests and errors are accumulated as fractions and only
whole ones are counted, so 4 Ready pods of which one answers half its requests with 500
give an overall error ratio of 1/8 up to one request. Latencies are drawn from a RNG seeded
per pod, so a run repeats itself.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devenv.mesh_routes import DEFAULT_HEADER_SHARE, Entry, Labels, ServiceKey, discover_routes, service_rates
from devenv.processes import Service

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

log = logging.getLogger(__name__)

ERROR_RATE_ANNOTATION = "canary-delivery.dev/simulate-error-rate"
LATENCY_ANNOTATION = "canary-delivery.dev/simulate-latency-ms"
TRAFFIC_ANNOTATION = "canary-delivery.dev/simulate-traffic"
DEFAULT_LATENCY_MS = 20.0
LATENCY_SPREAD = 0.2
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
# Istio's default bucket bounds for istio_request_duration_milliseconds.
BUCKETS_MS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
              300000, 600000, 1800000, 3600000)
REQUESTS = "istio_requests_total"
DURATION = "istio_request_duration_milliseconds"


@dataclass(frozen=True)
class Behaviour:
    """How a simulated pod answers: from its annotations, defaults where they are absent."""

    error_rate: float = 0.0
    latency_ms: float = DEFAULT_LATENCY_MS
    traffic: float = 1.0

    @classmethod
    def from_annotations(cls, annotations: Mapping[str, str] | None) -> Behaviour:
        """Read the ``simulate-*`` annotations; a value that does not parse is ignored, with a warning."""
        annotations = annotations or {}

        def number(key: str, default: float, low: float, high: float) -> float:
            raw = annotations.get(key)
            if raw is None:
                return default
            try:
                value = float(raw)
            except ValueError:
                value = math.nan
            if not low <= value <= high:
                log.warning("ignoring %s=%r: not a number in [%g, %g]", key, raw, low, high)
                return default
            return value

        return cls(
            error_rate=number(ERROR_RATE_ANNOTATION, 0.0, 0.0, 1.0),
            latency_ms=number(LATENCY_ANNOTATION, DEFAULT_LATENCY_MS, 0.0, 3_600_000.0),
            traffic=number(TRAFFIC_ANNOTATION, 1.0, 0.0, 1_000.0),
        )


@dataclass(frozen=True)
class Endpoint:
    """One pod behind one Service, as the simulator sees it this tick."""

    namespace: str
    service: str
    pod: str
    workload: str
    ready: bool
    behaviour: Behaviour = Behaviour()
    app: str = "unknown"
    version: str = "unknown"
    pod_labels: Labels = ()  # sorted (key, value): a DestinationRule subset picks pods by them

    @property
    def key(self) -> tuple[str, str, str]:
        """Identity across ticks: the same pod behind another Service is another destination."""
        return (self.namespace, self.service, self.pod)

    def labels(self, response_code: int) -> dict[str, str]:
        """Istio's labels for a request to this pod answered with ``response_code``."""
        return {
            "reporter": "destination",
            "source_workload": "unknown",
            "source_workload_namespace": "unknown",
            "destination_workload": self.workload,
            "destination_workload_namespace": self.namespace,
            "destination_service": f"{self.service}.{self.namespace}.svc.cluster.local",
            "destination_service_name": self.service,
            "destination_service_namespace": self.namespace,
            "destination_app": self.app,
            "destination_version": self.version,
            "request_protocol": "http",
            "response_code": str(response_code),
            "response_flags": "-",
            "pod": self.pod,
        }


@dataclass
class _Series:
    """The counters of one (Service, pod, response code)."""

    requests: int = 0
    duration_sum: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS_MS))

    def observe(self, latency_ms: float) -> None:
        self.requests += 1
        self.duration_sum += latency_ms
        for i, bound in enumerate(BUCKETS_MS):
            if latency_ms <= bound:
                self.buckets[i] += 1


@dataclass
class _PodTraffic:
    """What one pod behind one Service has received so far, and the fractions still owed."""

    endpoint: Endpoint
    rng: random.Random
    owed_requests: float = 0.0
    owed_errors: float = 0.0
    by_code: dict[int, _Series] = field(default_factory=dict)


class TrafficModel:
    """The counters, free of I/O: fed endpoints and elapsed time, rendered as exposition text.

    ``rate`` is requests per second per Service, or per route's entry point (a VirtualService,
    an HTTPRoute, a plain Ingress) for the Services a route sends to. Pods that leave a Service's endpoints lose
    their series (as a deleted pod's sidecar would); pods that are listed but not Ready keep
    theirs and receive nothing.
    """

    def __init__(self, rate: float, seed: int = 0) -> None:
        self.rate = rate
        self.seed = seed
        self._pods: dict[tuple[str, str, str], _PodTraffic] = {}
        self._lock = threading.Lock()

    def advance(self, endpoints: Iterable[Endpoint], seconds: float, routes: Sequence[Entry] = ()) -> None:
        """Deliver ``seconds`` of traffic to ``endpoints`` (the complete current list), through ``routes``."""
        endpoints = list(endpoints)
        shares = self.shares(endpoints, routes)
        with self._lock:
            current = {endpoint.key for endpoint in endpoints}
            for gone in set(self._pods) - current:
                del self._pods[gone]
            for endpoint in endpoints:
                pod = self._pods.get(endpoint.key)
                if pod is None:
                    rng = random.Random(f"{self.seed}:{endpoint.namespace}/{endpoint.service}/{endpoint.pod}")
                    pod = self._pods[endpoint.key] = _PodTraffic(endpoint, rng)
                pod.endpoint = endpoint
                share = shares.get(endpoint.key, 0.0)
                if share > 0:
                    self._deliver(pod, share * endpoint.behaviour.traffic * seconds)

    def shares(self, endpoints: Sequence[Endpoint], routes: Sequence[Entry] = ()) -> dict[tuple[str, str, str], float]:
        """Requests per second each Ready endpoint receives: its Service's portions, split evenly."""
        ready: dict[ServiceKey, list[Endpoint]] = {}
        for endpoint in endpoints:
            ready.setdefault((endpoint.namespace, endpoint.service), [])
            if endpoint.ready:
                ready[(endpoint.namespace, endpoint.service)].append(endpoint)
        shares: dict[tuple[str, str, str], float] = {}
        for service, portions in service_rates(ready, routes, self.rate).items():
            for portion in portions:
                wanted = set(portion.labels)
                eligible = [e for e in ready.get(service, []) if wanted <= set(e.pod_labels)]
                for endpoint in eligible:  # none Ready: the requests fail upstream, unseen here
                    shares[endpoint.key] = shares.get(endpoint.key, 0.0) + portion.rate / len(eligible)
        return shares

    @staticmethod
    def _deliver(pod: _PodTraffic, requests: float) -> None:
        behaviour = pod.endpoint.behaviour
        pod.owed_requests += requests
        count = math.floor(pod.owed_requests)
        pod.owed_requests -= count
        pod.owed_errors += count * behaviour.error_rate
        errors = min(count, math.floor(pod.owed_errors + 1e-9))
        pod.owed_errors = max(0.0, pod.owed_errors - errors)
        for code, n in ((500, errors), (200, count - errors)):
            if n == 0:
                continue
            series = pod.by_code.setdefault(code, _Series())
            for _ in range(n):
                spread = 1 + LATENCY_SPREAD * (2 * pod.rng.random() - 1)
                series.observe(behaviour.latency_ms * spread)

    def render(self) -> str:
        """The counters in Prometheus' text exposition format (version 0.0.4)."""
        requests = [f"# HELP {REQUESTS} Requests the simulated mesh delivered, by destination pod.",
                    f"# TYPE {REQUESTS} counter"]
        durations = [f"# HELP {DURATION} Simulated request durations in milliseconds.",
                     f"# TYPE {DURATION} histogram"]
        with self._lock:
            for key in sorted(self._pods):
                pod = self._pods[key]
                for code in sorted(pod.by_code):
                    series = pod.by_code[code]
                    labels = pod.endpoint.labels(code)
                    requests.append(f"{REQUESTS}{_labels(labels)} {series.requests}")
                    for bound, count in zip(BUCKETS_MS, series.buckets, strict=True):
                        durations.append(f"{DURATION}_bucket{_labels(labels, le=_number(bound))} {count}")
                    durations.append(f"{DURATION}_bucket{_labels(labels, le='+Inf')} {series.requests}")
                    durations.append(f"{DURATION}_sum{_labels(labels)} {_number(series.duration_sum)}")
                    durations.append(f"{DURATION}_count{_labels(labels)} {series.requests}")
        return "\n".join(requests + durations) + "\n"


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def _labels(labels: Mapping[str, str], **extra: str) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    items = {**labels, **extra}
    return "{" + ",".join(f'{name}="{escape(value)}"' for name, value in items.items()) + "}"


# -- reading the cluster -------------------------------------------------------------------


def _controller(obj: Any) -> Any | None:
    """The ownerReference that controls ``obj`` (a pod or ReplicaSet), if any."""
    for ref in obj.metadata.owner_references or []:
        if ref.controller:
            return ref
    return None


def workload_name(pod: Any) -> str:
    """The workload Istio names for ``pod``: its ReplicaSet's name less the pod's hash, else its owner's, else its own.

    Istio's injector does not look the ReplicaSet's owner up: a ReplicaSet named
    ``<name>-<pod-template-hash>`` (as the Deployment controller names its own) stands for
    workload ``<name>``.
    """
    owner = _controller(pod)
    if owner is None:
        return str(pod.metadata.name)
    template_hash = (pod.metadata.labels or {}).get("pod-template-hash")
    if owner.kind == "ReplicaSet" and template_hash and owner.name.endswith(f"-{template_hash}"):
        return str(owner.name)[: -len(template_hash) - 1]
    return str(owner.name)


def discover(api: ApiClient, services: Sequence[tuple[str, str]] | None,
             identities: dict[str, str] | None = None) -> list[Endpoint]:
    """The endpoints of ``services`` ((namespace, name) pairs; None: every Service) right now.

    ``identities`` (pod uid -> workload name) keeps the name each pod was first given, as a
    sidecar keeps the one injected at the pod's creation; pass the same dict on every call.
    """
    names = identities if identities is not None else {}
    from kubernetes import client

    discovery = client.DiscoveryV1Api(api)
    core = client.CoreV1Api(api)
    if services is None:
        slices = discovery.list_endpoint_slice_for_all_namespaces().items
    else:
        slices = []
        for namespace, name in services:
            slices += discovery.list_namespaced_endpoint_slice(
                namespace, label_selector=f"{SERVICE_NAME_LABEL}={name}").items
    # Per (namespace, service, pod): Ready if any of its endpoints is (dual-stack lists it twice).
    wanted: dict[tuple[str, str, str], bool] = {}
    for endpoint_slice in slices:
        service = (endpoint_slice.metadata.labels or {}).get(SERVICE_NAME_LABEL)
        if not service:
            continue
        for endpoint in endpoint_slice.endpoints or []:
            ref = endpoint.target_ref
            if ref is None or ref.kind != "Pod":
                continue
            # The API says an unknown readiness is to be taken as ready.
            ready = endpoint.conditions is None or endpoint.conditions.ready is not False
            key = (ref.namespace or endpoint_slice.metadata.namespace, service, ref.name)
            wanted[key] = wanted.get(key, False) or ready
    endpoints: list[Endpoint] = []
    for namespace in sorted({key[0] for key in wanted}):
        pods = {pod.metadata.name: pod for pod in core.list_namespaced_pod(namespace).items}
        for (ns, service, name), ready in sorted(wanted.items()):
            pod = pods.get(name)
            if ns != namespace or pod is None:
                continue
            labels = pod.metadata.labels or {}
            workload = names.setdefault(str(pod.metadata.uid), workload_name(pod))
            endpoints.append(Endpoint(
                namespace=ns, service=service, pod=name, workload=workload,
                ready=ready, behaviour=Behaviour.from_annotations(pod.metadata.annotations),
                app=labels.get("app", labels.get("app.kubernetes.io/name", "unknown")),
                version=labels.get("version", labels.get("app.kubernetes.io/version", "unknown")),
                pod_labels=tuple(sorted(labels.items())),
            ))
    return endpoints


# -- the exporter --------------------------------------------------------------------------


class TrafficSimulator(Service):
    """Serve simulated mesh metrics at ``http://<address>/metrics`` for Prometheus to scrape.

    Two daemon threads in this process: an HTTP server on a free loopback port, and a ticker
    that every ``tick`` seconds reads the endpoints of ``services`` from the cluster (all
    Services if None) and the routes of their namespaces, and delivers the elapsed time's
    traffic. ``header_share`` is the fraction of requests that carry the test header a header
    route matches. A failed read keeps the last view and is logged, so a restarting API server
    pauses nothing but changes.
    """

    def __init__(
        self,
        kubeconfig: Path,
        services: Sequence[tuple[str, str]] | None = None,
        *,
        rate: float = 20.0,
        tick: float = 0.5,
        seed: int = 0,
        port: int = 0,
        header_share: float = DEFAULT_HEADER_SHARE,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.header_share = header_share
        self._services = None if services is None else list(dict.fromkeys(services))
        self.model = TrafficModel(rate, seed)
        self.tick = tick
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._api: ApiClient | None = None
        self._endpoints: list[Endpoint] = []
        self._identities: dict[str, str] = {}  # pod uid -> the workload name it was first given
        self._routes: list[Entry] = []

    def start(self) -> None:
        """Read the endpoints once (a wrong kubeconfig fails here), then serve and tick."""
        from kubernetes import config

        self._api = config.new_client_from_config(config_file=str(self.kubeconfig))
        try:
            self._endpoints = discover(self._api, self._services, self._identities)
            self._routes = self._discover_routes()
            self._server = ThreadingHTTPServer(("127.0.0.1", self._port), _handler(self.model))
        except BaseException:
            self._api.close()
            self._api = None
            raise
        self._stopping.clear()
        self._threads = [
            threading.Thread(target=self._server.serve_forever, name="traffic-http", daemon=True),
            threading.Thread(target=self._run, name="traffic-tick", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop serving and ticking; the counters are kept (a restart continues them)."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads = []
        if self._api is not None:
            self._api.close()
            self._api = None

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, as a Prometheus scrape target."""
        if self._server is None:
            raise RuntimeError("the traffic simulator is not running")
        return f"127.0.0.1:{self._server.server_address[1]}"

    def watch(self, namespace: str, service: str) -> None:
        """Simulate traffic to one more Service (no effect when all Services are simulated)."""
        if self._services is not None and (namespace, service) not in self._services:
            self._services = [*self._services, (namespace, service)]

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stopping.wait(self.tick):
            assert self._api is not None
            try:
                self._endpoints = discover(self._api, self._services, self._identities)
            except Exception as err:  # any API failure: keep simulating the last view
                log.warning("traffic simulator: reading endpoints failed: %s", err)
            try:
                self._routes = self._discover_routes()
            except Exception as err:
                log.warning("traffic simulator: reading routes failed: %s", err)
            now = time.monotonic()
            self.model.advance(self._endpoints, now - last, self._routes)
            last = now

    def _discover_routes(self) -> list[Entry]:
        assert self._api is not None
        namespaces = None if self._services is None else sorted({namespace for namespace, _ in self._services})
        return discover_routes(self._api, namespaces, self.header_share)


def _handler(model: TrafficModel) -> type[BaseHTTPRequestHandler]:
    class MetricsHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self.send_error(404)
                return
            body = model.render().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Scrapes every second would flood stderr; say nothing."""

    return MetricsHandler
