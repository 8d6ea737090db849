"""The Grafana dashboard plots the metrics the code emits, under the names Prometheus sees."""

from __future__ import annotations

import json
import re
from pathlib import Path

from activities.notifier import DETECTION_LATENCY
from starter.api.metrics import JOBS
from workflows import telemetry

ROOT = Path(__file__).resolve().parents[1]


def _exported() -> set[str]:
    """Names as exported: counters get ``_total``, histograms ``_bucket``/``_sum``/``_count``."""
    counters = {telemetry.RELEASES_STARTED, telemetry.RELEASES_FINISHED, telemetry.OPERATIONS}
    histograms = {telemetry.RELEASE_DURATION, telemetry.STEP_DURATION, DETECTION_LATENCY}
    return ({f"{c}_total" for c in counters} | {JOBS}
            | {f"{h}_{suffix}" for h in histograms for suffix in ("bucket", "sum", "count")})


def test_every_product_metric_on_the_dashboard_exists_and_every_one_is_plotted() -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "canary-delivery.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\bcanary_[a-z_]+", expr)}
    assert used <= _exported(), used - _exported()
    plotted_families = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in used}
    assert plotted_families == {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in _exported()}


def test_the_readme_metrics_table_lists_every_product_metric() -> None:
    readme = (ROOT / "README.md").read_text()
    for family in {re.sub(r"_(bucket|sum|count)$", "", n) for n in _exported()}:
        assert f"`{family}`" in readme, family
