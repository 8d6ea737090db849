"""Field types every spec module shares: names, durations and the strict model base.

Split from :mod:`workflows.spec` so that the analysis spec (which the job spec embeds) can use
them without an import cycle.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer, TypeAdapter, ValidationError

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_DURATION = re.compile(r"^\s*(-?\d+)\s*(s|m|h|d)?\s*$")
_ISO_DURATION = re.compile(r"^-?P")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
# Every duration a job holds (pauses, deadlines) is at most a year: longer waits are mistakes,
# and unbounded ones overflow date arithmetic.
MAX_DURATION = timedelta(days=365)
MAX_DURATION_TEXT = "365d"


def parse_duration(value: Any) -> timedelta:
    """Read a duration the way Argo Rollouts users write it: ``30s``, ``10m``, ``1h``, ``2d`` or seconds."""
    seconds = _seconds(value)
    if not math.isfinite(seconds):
        raise ValueError(f"must be a finite duration of at most {MAX_DURATION_TEXT}")
    if seconds < 0:
        raise ValueError("must not be negative")
    if seconds > MAX_DURATION.total_seconds():
        # A bound where the value enters: a timer of thousands of years would overflow the
        # workflow's clock arithmetic and wedge the job.
        raise ValueError(f"must be at most {MAX_DURATION_TEXT}")
    return timedelta(seconds=round(seconds))


def _seconds(value: Any) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and _ISO_DURATION.match(value):
        try:
            return TypeAdapter(timedelta).validate_python(value).total_seconds()
        except (ValidationError, OverflowError):
            raise ValueError(f"{value!r} is not a duration of at most {MAX_DURATION_TEXT}") from None
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a duration; use a number with s, m, h or d, such as 10m")
        return int(match.group(1)) * _UNITS[match.group(2)]
    raise ValueError("must be a duration such as 30s, 10m or 1h")


def format_duration(value: timedelta) -> str:
    """Write a duration back in the shortest unit that is exact (``90s`` -> ``90s``, ``600s`` -> ``10m``)."""
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# A duration field: read as 30s / 10m / 1h / 2d (or seconds), written back the same way.
Duration = Annotated[timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)]


class StrictModel(BaseModel):
    """Every spec model: unknown fields refused, aliases on the wire, immutable once read."""

    # Aliases on the wire (Temporal payloads, the API, YAML) so a stored job reads like the one written.
    model_config = ConfigDict(
        extra="forbid", validate_by_name=True, validate_by_alias=True, serialize_by_alias=True, frozen=True
    )
