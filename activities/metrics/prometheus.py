"""The Prometheus provider: one instant query over Prometheus' HTTP API.

A metric must come to one number, so the answer must be a scalar or a vector of at most one
sample. An empty vector, and ``NaN`` (a ratio over no traffic, ``0/0``), mean no data: the
caller judges that inconclusive. Several samples mean the query forgot to aggregate; that is
an error naming the count, not a guess at which sample was meant.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from activities.metrics import ProviderError

TIMEOUT_SECONDS = 10.0


def query(address: str, promql: str, timeout: float = TIMEOUT_SECONDS) -> float | None:
    """The value of ``promql`` now at the Prometheus at ``address``; None when there is no data."""
    url = f"{address.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    body = _get(url, timeout)
    if not isinstance(body, dict) or body.get("status") != "success" or not isinstance(body.get("data"), dict):
        raise ProviderError(f"Prometheus at {address} answered {str(body)[:200]!r}, not a query result")
    return _value(body["data"])


def _get(url: str, timeout: float) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as err:
        # Prometheus explains a refused query in a JSON body (400 bad_data, 422 execution).
        detail = err.read().decode(errors="replace")
        try:
            detail = str(json.loads(detail).get("error", detail))
        except (ValueError, AttributeError):
            pass
        raise ProviderError(f"Prometheus refused the query (HTTP {err.code}): {detail[:500]}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise ProviderError(f"Prometheus at {url.split('/api/')[0]} is unreachable: {reason}") from None
    except ValueError as err:
        raise ProviderError(f"Prometheus answered something other than JSON: {err}") from None


def _value(data: dict[str, Any]) -> float | None:
    kind = data.get("resultType")
    result = data.get("result")
    if kind == "scalar":
        return _number(result)
    if kind != "vector":
        raise ProviderError(f"the query gave a {kind}, not a scalar or an instant vector")
    if not isinstance(result, list):
        raise ProviderError("the query's vector is not a list")
    if not result:
        return None
    if len(result) > 1:
        raise ProviderError(f"the query gave {len(result)} samples; aggregate it to one (e.g. with sum)")
    sample = result[0]
    return _number(sample.get("value") if isinstance(sample, dict) else None)


def _number(pair: Any) -> float | None:
    if not isinstance(pair, list) or len(pair) != 2:
        raise ProviderError(f"the query's sample {pair!r} is not [time, value]")
    try:
        value = float(pair[1])
    except (TypeError, ValueError):
        raise ProviderError(f"the query's value {pair[1]!r} is not a number") from None
    return None if math.isnan(value) else value


def query_range(address: str, promql: str, start: float, end: float, step: float,
                timeout: float = TIMEOUT_SECONDS) -> list[float]:
    """The values of ``promql`` from ``start`` to ``end`` (Unix seconds) every ``step`` seconds.

    The query must come to at most one series (a baseline compares one series per side); no
    series is an empty list, and ``NaN`` points (a rate over no requests) are left out, since
    they are steps without data, not measurements.
    """
    url = f"{address.rstrip('/')}/api/v1/query_range?" + urllib.parse.urlencode(
        {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"})
    body = _get(url, timeout)
    if not isinstance(body, dict) or body.get("status") != "success" or not isinstance(body.get("data"), dict):
        raise ProviderError(f"Prometheus at {address} answered {str(body)[:200]!r}, not a query result")
    data = body["data"]
    if data.get("resultType") != "matrix" or not isinstance(data.get("result"), list):
        raise ProviderError(f"the range query gave a {data.get('resultType')}, not a matrix")
    series = data["result"]
    if not series:
        return []
    if len(series) > 1:
        raise ProviderError(f"the query gave {len(series)} series; aggregate it to one (e.g. with sum)")
    points = series[0].get("values") if isinstance(series[0], dict) else None
    if not isinstance(points, list):
        raise ProviderError("the range query's series has no values")
    values = [_number(point) for point in points]
    return [value for value in values if value is not None]
