"""How many requests the Temporal server answered, by operation, between two readings.

The dev server's ``/metrics`` (``--metrics-port``) counts every request per service
operation (``service_requests``) and every persistence call (``persistence_requests``). The
difference of two readings says which calls a phase of a benchmark cost, which is where a
fleet's Temporal CPU goes: polls, heartbeats, workflow tasks, upserts, visibility writes.
"""

from __future__ import annotations

import re
import urllib.request
from collections import Counter
from collections.abc import Mapping

_SAMPLE = re.compile(r'^(?P<name>[a-z_]+)\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$')
_LABEL = re.compile(r'([a-z_]+)="([^"]*)"')
# metric -> (prefix, the labels that name a request)
Counters = dict[str, tuple[str, tuple[str, ...]]]
TEMPORAL: Counters = {"service_requests": ("service", ("operation",)),
                      "persistence_requests": ("persistence", ("operation",))}
APISERVER: Counters = {"apiserver_request_total": ("api", ("verb", "resource", "subresource")),
                       "apiserver_watch_events_total": ("watch-events", ("kind",))}


def read_counts(url: str) -> Counter[str]:
    """Requests so far by operation, read from a Temporal server's ``/metrics``."""
    with urllib.request.urlopen(url, timeout=5) as response:  # a local server
        return count_requests(response.read().decode(), TEMPORAL)


def count_requests(text: str, metrics: Mapping[str, tuple[str, tuple[str, ...]]]) -> Counter[str]:
    """``prefix:label/label`` -> the counter's value, summed over the other labels."""
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or match["name"] not in metrics:
            continue
        prefix, names = metrics[match["name"]]
        labels = dict(_LABEL.findall(match["labels"]))
        key = "/".join(labels[n] for n in names if labels.get(n))
        counts[f"{prefix}:{key}"] += int(float(match["value"]))
    return counts


def difference(before: Counter[str], after: Counter[str], *, top: int = 15) -> dict[str, int]:
    """The ``top`` operations by requests between the two readings, most first."""
    delta = Counter({key: after[key] - before.get(key, 0) for key in after})
    return {key: n for key, n in delta.most_common(top) if n > 0}
