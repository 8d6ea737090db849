"""The Prometheus server of the dev environment: scrapes what it is told, answers PromQL, leaves nothing."""

from __future__ import annotations

import math
import time

import pytest

from devenv.processes import pid_alive, port_in_use
from devenv.prometheus import PrometheusError, PrometheusServer
from tests.kube_helpers import eventually


def test_scrapes_an_added_target_and_forgets_a_removed_one() -> None:
    with PrometheusServer() as prometheus:
        assert prometheus.query('up{job="mesh"}') is None
        prometheus.add_target(prometheus.address.removeprefix("http://"))  # it scrapes itself
        assert prometheus.wait_for('up{job="mesh"}', timeout=20) == 1
        assert prometheus.query("count(prometheus_build_info)") == 1

        prometheus.remove_target(prometheus.targets[0])
        eventually(lambda: prometheus.query('up{job="mesh"}') is None, timeout=20,
                   what="the removed target's series to go stale")


def test_query_tells_no_series_from_nan_and_rejects_bad_promql() -> None:
    with PrometheusServer() as prometheus:
        assert prometheus.query("no_such_metric") is None
        nan = prometheus.query("vector(0) / 0")
        assert nan is not None and math.isnan(nan)
        assert prometheus.query("scalar(vector(3))") == 3
        with pytest.raises(PrometheusError, match="parse error"):
            prometheus.query("sum(rate(")
        with pytest.raises(PrometheusError, match="aggregate"):
            prometheus.query("vector(1) or label_replace(vector(2), 'a', 'b', '', '')")


def test_stop_ends_the_process_frees_the_port_and_removes_its_data() -> None:
    prometheus = PrometheusServer()
    prometheus.start()
    pid, port, run_dir = prometheus.pid, prometheus.port, prometheus.run_dir
    assert pid is not None and port_in_use(port) and (run_dir / "data").is_dir()
    prometheus.stop()
    deadline = time.monotonic() + 5
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(pid)
    assert not port_in_use(port)
    assert not run_dir.exists()
