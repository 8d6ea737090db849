"""The baseline provider: the canary's series and the stable pods', compared over one window.

Two range queries over the last ``window`` at every ``step`` (the same query with the canary's
and the stable Deployment's name), then :func:`workflows.comparison.compare` decides. Unlike
the other providers this one gives a whole measurement, not a value for CEL conditions: the
phase comes from the comparison and the value is the relative difference of the medians
(``+0.5`` = the canary's median is 50 % higher). Too few samples (no traffic, a canary
younger than the window's first steps) is inconclusive, never failed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from activities.metrics import ProviderError, prometheus
from workflows.analysis_spec import BaselineProvider
from workflows.comparison import compare
from workflows.verdict import Measurement


def measure(provider: BaselineProvider, address: str, at: datetime,
            now: Callable[[], float] = time.time) -> Measurement:
    """Query both sides and judge them; Prometheus trouble or a bad rendered name is a ProviderError."""
    try:
        canary_query, stable_query = provider.queries()
    except ValueError as err:
        raise ProviderError(f"baseline: {err}") from None
    end = now()
    start = end - provider.window.total_seconds()
    step = provider.step.total_seconds()
    canary = prometheus.query_range(address, canary_query, start, end, step)
    stable = prometheus.query_range(address, stable_query, start, end, step)
    verdict = compare(canary, stable, higher_is_worse=provider.worse_when_higher,
                      max_difference=provider.max_difference, alpha=provider.alpha,
                      min_samples=provider.min_samples)
    return Measurement(value=verdict.relative_difference, phase=verdict.phase, message=verdict.message[:1000], at=at)
