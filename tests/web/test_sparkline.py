"""The sparkline's geometry: what a glance at the chart must not get wrong."""

from __future__ import annotations

from starter.api.sparkline import HEIGHT, PAD, WIDTH, sparkline
from tests.starter.analysis_data import INC, E, F, S, measured


def test_higher_values_are_drawn_higher_across_the_whole_width() -> None:
    chart = sparkline(measured((S, 0.99), (F, 0.93), (S, 0.995)))
    assert chart is not None
    xs = [p.x for p in chart.points]
    ys = [p.y for p in chart.points]
    assert xs == [PAD, WIDTH / 2, WIDTH - PAD]
    assert ys[1] == HEIGHT - PAD and ys[2] == PAD and ys[2] < ys[0] < ys[1]  # smaller y is higher up
    assert [p.phase for p in chart.points] == ["successful", "failed", "successful"]
    assert chart.lines == [" ".join(f"{x},{y}" for x, y in zip(xs, ys, strict=True))]


def test_a_gap_in_the_data_breaks_the_line_instead_of_bridging_it() -> None:
    chart = sparkline(measured((S, 1.0), (S, 2.0), (INC, None, "no requests"), (E, None, "refused"),
                               (S, 3.0), (S, 4.0), (INC, float("nan"))))
    assert chart is not None
    assert len(chart.lines) == 2
    assert [p.valued for p in chart.points] == [True, True, False, False, True, True, False]
    assert all(p.y == HEIGHT - PAD for p in chart.points if not p.valued)
    assert chart.points[2].label.startswith("no data at ") and chart.points[2].label.endswith(": no requests")
    assert chart.points[3].label.startswith("error at ") and chart.points[3].label.endswith(": refused")


def test_one_value_or_a_flat_series_sits_in_the_middle() -> None:
    single = sparkline(measured((S, 0.5)))
    assert single is not None and single.lines == []  # one dot, no line to draw
    assert (single.points[0].x, single.points[0].y) == (WIDTH / 2, HEIGHT / 2)
    flat = sparkline(measured((S, 7.0), (S, 7.0)))
    assert flat is not None and {p.y for p in flat.points} == {HEIGHT / 2}
    assert sparkline([]) is None
