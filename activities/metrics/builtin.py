"""The built-in checks provider: a check name rendered to PromQL, asked of Prometheus.

The query text comes from :mod:`workflows.builtin_checks` (pure, tested on its own); this
module only sends it, so a built-in check answers exactly as the same query written by hand
under the ``prometheus`` provider would, no traffic included (no data, never 0 or 1).
"""

from __future__ import annotations

from activities.metrics import ProviderError, prometheus
from workflows.analysis_spec import BuiltinProvider


def query(provider: BuiltinProvider, address: str) -> float | None:
    """The check's value for the canary now; a workload an arg made invalid is a ProviderError."""
    try:
        promql = provider.promql()
    except ValueError as err:
        raise ProviderError(f"builtin {provider.check}: {err}") from None
    return prometheus.query(address, promql)
