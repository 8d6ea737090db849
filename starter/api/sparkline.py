"""A metric's recent measurements as a sparkline: geometry only, drawn as inline SVG by the template.

Computed on the server so the page needs no script for it (its CSP allows none inline) and so
the shape can be tested with plain numbers. Measurements without a value (no data, errors)
break the line and show as a mark on the baseline in their phase's colour: a gap in the data
must not look like a straight line between its neighbours. Every point carries a label (value,
phase, time, message) that the template puts in a ``<title>``, escaped like all its text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC

from starter.analysis_format import measurement_text
from workflows.verdict import Measurement

WIDTH, HEIGHT, PAD = 120, 28, 3


@dataclass(frozen=True)
class Point:
    """One measurement on the chart; ``valued`` False: drawn as a baseline mark, not a dot."""

    x: float
    y: float
    phase: str
    label: str
    valued: bool


@dataclass(frozen=True)
class Sparkline:
    """What the template draws: polylines (``"x,y x,y"``) between valued points, and every point."""

    width: int = WIDTH
    height: int = HEIGHT
    lines: list[str] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)


def _label(measurement: Measurement) -> str:
    text = measurement_text(measurement)
    if measurement.at is not None:
        text += f" at {measurement.at.astimezone(UTC).strftime('%H:%M:%S')} UTC"
    return f"{text}: {measurement.message}" if measurement.message else text


def _number(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def sparkline(measurements: Sequence[Measurement], width: int = WIDTH, height: int = HEIGHT) -> Sparkline | None:
    """The chart of ``measurements`` (oldest first); None when there is nothing to draw."""
    if not measurements:
        return None
    values = [v for v in (_number(m.value) for m in measurements) if v is not None]
    low, high = (min(values), max(values)) if values else (0.0, 0.0)
    step = (width - 2 * PAD) / max(1, len(measurements) - 1)
    points: list[Point] = []
    lines: list[str] = []
    run: list[str] = []
    for index, measurement in enumerate(measurements):
        x = round(float(PAD + index * step if len(measurements) > 1 else width / 2), 1)
        value = _number(measurement.value)
        if value is None:
            points.append(Point(x, float(height - PAD), measurement.phase.value, _label(measurement), valued=False))
            if run:
                lines.append(" ".join(run))
            run = []
            continue
        # Higher values higher up; a flat series sits in the middle rather than on an edge.
        share = 0.5 if high == low else (value - low) / (high - low)
        y = round(height - PAD - share * (height - 2 * PAD), 1)
        points.append(Point(x, y, measurement.phase.value, _label(measurement), valued=True))
        run.append(f"{x},{y}")
    if run:
        lines.append(" ".join(run))
    return Sparkline(width=width, height=height, lines=[line for line in lines if " " in line], points=points)
