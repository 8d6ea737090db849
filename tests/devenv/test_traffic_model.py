"""The simulator's arithmetic and exposition, without a cluster: what Prometheus will be fed."""

from __future__ import annotations

from types import SimpleNamespace

from devenv.traffic import (
    ERROR_RATE_ANNOTATION,
    LATENCY_ANNOTATION,
    TRAFFIC_ANNOTATION,
    Behaviour,
    Endpoint,
    TrafficModel,
    workload_name,
)


def endpoint(pod: str, workload: str = "web", *, ready: bool = True, **annotations: str) -> Endpoint:
    names = {"error_rate": ERROR_RATE_ANNOTATION, "latency_ms": LATENCY_ANNOTATION, "traffic": TRAFFIC_ANNOTATION}
    behaviour = Behaviour.from_annotations({names[k]: v for k, v in annotations.items()})
    return Endpoint(namespace="ns", service="web", pod=pod, workload=workload, ready=ready, behaviour=behaviour)


def samples(model: TrafficModel) -> dict[str, float]:
    """Exposition lines as {series: value}, checking every line is a comment or a sample."""
    out: dict[str, float] = {}
    for line in model.render().splitlines():
        if line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        out[series] = float(value)
    return out


def total(model: TrafficModel, metric: str, **labels: str) -> float:
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(v for s, v in samples(model).items()
               if s.split("{", 1)[0] == metric and all(w in s for w in wanted))


def test_rate_is_split_over_ready_pods_and_errors_are_exact() -> None:
    model = TrafficModel(rate=40)
    pods = [endpoint("web-1"), endpoint("web-2"), endpoint("web-3"),
            endpoint("web-canary-1", "web-canary", error_rate="0.5"), endpoint("web-4", ready=False)]
    for _ in range(20):
        model.advance(pods, 0.5)
    requests = "istio_requests_total"
    assert total(model, requests) == 400
    assert total(model, requests, pod="web-1") == 100
    assert total(model, requests, pod="web-4") == 0
    assert total(model, requests, destination_workload="web-canary", response_code="500") == 50
    assert total(model, requests, destination_workload="web", response_code="500") == 0


def test_fractional_requests_carry_over_between_ticks() -> None:
    model = TrafficModel(rate=3)
    pods = [endpoint("a"), endpoint("b", error_rate="0.1")]
    for _ in range(100):
        model.advance(pods, 0.1)  # 0.15 requests per pod per tick
    assert total(model, "istio_requests_total", pod="a") == 15
    assert total(model, "istio_requests_total", pod="b", response_code="500") == 1


def test_no_traffic_pod_has_no_series_and_takes_its_share_with_it() -> None:
    model = TrafficModel(rate=20)
    model.advance([endpoint("web-1"), endpoint("quiet-1", "quiet", traffic="0")], 10)
    assert "quiet" not in model.render()
    assert total(model, "istio_requests_total", pod="web-1") == 100


def test_latency_lands_in_istio_buckets_around_the_annotation() -> None:
    model = TrafficModel(rate=100)
    model.advance([endpoint("slow", latency_ms="250"), endpoint("fast")], 10)
    bucket = "istio_request_duration_milliseconds_bucket"
    assert total(model, bucket, pod="slow", le="100") == 0
    assert total(model, bucket, pod="slow", le="500") == 500
    assert 0 < total(model, bucket, pod="slow", le="250") < 500
    assert total(model, bucket, pod="fast", le="25") == 500
    count = total(model, "istio_request_duration_milliseconds_count", pod="slow")
    assert 200 <= total(model, "istio_request_duration_milliseconds_sum", pod="slow") / count <= 300


def test_same_seed_same_latencies() -> None:
    def run(seed: int) -> str:
        model = TrafficModel(rate=50, seed=seed)
        model.advance([endpoint("slow", latency_ms="250")], 2)
        return model.render()

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_pods_gone_from_the_endpoints_lose_their_series() -> None:
    model = TrafficModel(rate=10)
    model.advance([endpoint("old"), endpoint("new")], 1)
    model.advance([endpoint("new")], 1)
    assert 'pod="old"' not in model.render()


def test_unparsable_annotations_fall_back_to_defaults() -> None:
    behaviour = Behaviour.from_annotations({ERROR_RATE_ANNOTATION: "lots", LATENCY_ANNOTATION: "-5",
                                            TRAFFIC_ANNOTATION: "nan"})
    assert behaviour == Behaviour()


def owned(name: str, owner: tuple[str, str] | None, labels: dict[str, str] | None = None) -> SimpleNamespace:
    refs = [SimpleNamespace(kind=owner[0], name=owner[1], controller=True)] if owner else None
    return SimpleNamespace(metadata=SimpleNamespace(name=name, owner_references=refs, labels=labels))


def test_workload_is_the_replica_sets_name_less_the_pod_hash_as_istio_names_it() -> None:
    # The Deployment's pods and a canary's (a canary Deployment's, or the job's canary ReplicaSet).
    assert workload_name(owned("web-7c4b-y2", ("ReplicaSet", "web-7c4b"), {"pod-template-hash": "7c4b"})) == "web"
    assert workload_name(owned("web-canary-5d9f-x1", ("ReplicaSet", "web-canary-5d9f"),
                               {"pod-template-hash": "5d9f"})) == "web-canary"
    # A ReplicaSet not named after the pods' hash stands for itself.
    assert workload_name(owned("odd-1", ("ReplicaSet", "odd"), {"pod-template-hash": "5d9f"})) == "odd"
    assert workload_name(owned("db-0", ("StatefulSet", "db"))) == "db"
    assert workload_name(owned("bare", None)) == "bare"
