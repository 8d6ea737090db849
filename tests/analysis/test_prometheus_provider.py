"""The measure_metric activity against a real Prometheus (Debian's, run by devenv.prometheus)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from temporalio.testing import ActivityEnvironment

from activities.metrics import Measurement, MeasurementPhase, MeasureRequest, MetricActivities, measure
from devenv.processes import free_port
from devenv.prometheus import PrometheusServer


@pytest.fixture(scope="module")
def prometheus() -> Iterator[PrometheusServer]:
    with PrometheusServer() as server:
        yield server


def request(query: str, address: str | None, **conditions: Any) -> MeasureRequest:
    conditions.setdefault("successCondition", "result >= 0.99")
    conditions.setdefault("failureCondition", "result < 0.95")
    return MeasureRequest.model_validate({
        "metric": "success-rate", "provider": {"prometheus": {"query": query, "address": address}}, **conditions})


def test_a_value_is_judged_by_both_conditions(prometheus: PrometheusServer) -> None:
    good = measure(request("vector(0.995)", prometheus.address))
    assert (good.phase, good.value) == (MeasurementPhase.SUCCESSFUL, 0.995)
    assert good.message == "successCondition result >= 0.99 is true" and good.at is not None
    bad = measure(request("vector(0.9)", prometheus.address))
    assert (bad.phase, bad.value, bad.message) == (
        MeasurementPhase.FAILED, 0.9, "failureCondition result < 0.95 is true")
    between = measure(request("scalar(vector(0.97))", prometheus.address))
    assert between.phase is MeasurementPhase.INCONCLUSIVE
    only_success = measure(request("vector(0.97)", prometheus.address, failureCondition=None))
    assert only_success.phase is MeasurementPhase.FAILED


def test_a_scraped_series_is_measured(prometheus: PrometheusServer) -> None:
    prometheus.add_target(prometheus.address.removeprefix("http://"))  # it scrapes itself
    prometheus.wait_for('up{job="mesh"}', timeout=30)
    answer = measure(request('sum(up{job="mesh"})', prometheus.address, successCondition="result == 1.0",
                             failureCondition="result == 0.0"))
    assert (answer.phase, answer.value) == (MeasurementPhase.SUCCESSFUL, 1.0)


@pytest.mark.parametrize("query", ["no_such_metric", "vector(0) / 0", "sum(no_such_metric)"])
def test_no_data_is_inconclusive_never_failed(prometheus: PrometheusServer, query: str) -> None:
    answer = measure(request(query, prometheus.address))
    assert (answer.phase, answer.value, answer.message) == (MeasurementPhase.INCONCLUSIVE, None, "no data")


def test_a_bad_query_is_an_error_with_prometheus_reason(prometheus: PrometheusServer) -> None:
    answer = measure(request("sum(rate(", prometheus.address))
    assert answer.phase is MeasurementPhase.ERROR
    assert "success-rate: Prometheus refused the query (HTTP 400)" in answer.message
    assert "parse error" in answer.message


def test_several_samples_are_an_error_naming_the_count(prometheus: PrometheusServer) -> None:
    answer = measure(request("vector(1) or label_replace(vector(2), 'a', 'b', '', '')", prometheus.address))
    assert answer.phase is MeasurementPhase.ERROR and "gave 2 samples; aggregate it" in answer.message


def test_prometheus_down_is_an_error_not_a_pass() -> None:
    server = PrometheusServer()
    server.start()
    address = server.address
    assert measure(request("vector(1)", address)).phase is MeasurementPhase.SUCCESSFUL
    server.stop()
    answer = measure(request("vector(1)", address))
    assert answer.phase is MeasurementPhase.ERROR and "unreachable" in answer.message
    nobody = measure(request("vector(1)", f"http://127.0.0.1:{free_port()}"))
    assert nobody.phase is MeasurementPhase.ERROR


def test_no_address_at_all_is_an_error() -> None:
    answer = measure(request("vector(1)", None))
    assert answer.phase is MeasurementPhase.ERROR and "no Prometheus address" in answer.message


async def test_the_activity_uses_the_workers_default_address(prometheus: PrometheusServer) -> None:
    activities = MetricActivities(default_prometheus_address=prometheus.address)
    answer = await ActivityEnvironment().run(activities.measure_metric, request("vector(0.5)", None))
    assert isinstance(answer, Measurement)
    assert (answer.phase, answer.value) == (MeasurementPhase.FAILED, 0.5)
