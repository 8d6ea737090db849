"""The web provider: an HTTP GET or POST answering JSON, its value picked by a JSON path.

Only a small JSONPath subset is read: ``$.a.b[0].c`` (Argo's ``{$.a.b}`` braces allowed), since
a metric endpoint answers one number at a known place and filters would only hide mistakes.
The value may be a number, a numeric string, or a boolean (true is 1); ``null`` is no data.
"""

from __future__ import annotations

import json
import math
import re
import urllib.error
import urllib.request
from typing import Any

from activities.metrics import ProviderError
from workflows.analysis_spec import WebProvider

_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]")


def parse_path(path: str) -> list[str | int]:
    """The keys and indexes of ``$.a.b[0].c``: ``["a", "b", 0, "c"]``."""
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    if not text.startswith("$"):
        raise ProviderError(f"JSON path {path!r} must start with $")
    steps: list[str | int] = []
    position = 1
    while position < len(text):
        match = _STEP.match(text, position)
        if match is None:
            raise ProviderError(f"JSON path {path!r}: cannot read {text[position:]!r}")
        steps.append(match.group(1) if match.group(1) is not None else int(match.group(2)))
        position = match.end()
    return steps


def pick(document: Any, path: str) -> Any:
    """The value at ``path`` in ``document``; a missing key or index is a ProviderError naming it."""
    current = document
    walked = "$"
    for step in parse_path(path):
        if isinstance(step, int):
            if not isinstance(current, list) or step >= len(current):
                raise ProviderError(f"JSON path {path!r}: {walked} has no item [{step}]")
            walked += f"[{step}]"
        else:
            if not isinstance(current, dict) or step not in current:
                raise ProviderError(f"JSON path {path!r}: {walked} has no key {step!r}")
            walked += f".{step}"
        current = current[step]
    return current


def to_number(value: Any, path: str) -> float | None:
    """A JSON value as a metric value: None for null or NaN, booleans as 0/1."""
    if value is None:
        return None
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float | str):
        try:
            number = float(value)
        except ValueError:
            raise ProviderError(f"JSON path {path!r} gave {value!r}, not a number") from None
        return None if math.isnan(number) else number
    raise ProviderError(f"JSON path {path!r} gave a {type(value).__name__}, not a number")


def query(provider: WebProvider) -> float | None:
    """Call the endpoint and pick the value; timeouts, non-2xx answers and non-JSON are ProviderErrors."""
    data = provider.body.encode() if provider.body is not None else None
    headers = {header.key: header.value for header in provider.headers}
    if data is not None:
        headers.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(provider.url, data=data, headers=headers, method=provider.method)
    try:
        with urllib.request.urlopen(request, timeout=provider.timeout_seconds) as response:
            raw = response.read(1_000_001)
    except urllib.error.HTTPError as err:
        raise ProviderError(f"{provider.method} {provider.url} answered HTTP {err.code}") from None
    except TimeoutError:
        raise ProviderError(f"{provider.method} {provider.url} timed out after {provider.timeout_seconds}s") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        if isinstance(reason, TimeoutError):
            raise ProviderError(
                f"{provider.method} {provider.url} timed out after {provider.timeout_seconds}s") from None
        raise ProviderError(f"{provider.method} {provider.url} is unreachable: {reason}") from None
    if len(raw) > 1_000_000:
        raise ProviderError(f"{provider.method} {provider.url} answered more than 1 MB")
    try:
        document = json.loads(raw)
    except ValueError:
        raise ProviderError(f"{provider.method} {provider.url} did not answer JSON: {raw[:100]!r}") from None
    return to_number(pick(document, provider.json_path), provider.json_path)
