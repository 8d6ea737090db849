"""``canaryctl get``'s Analysis section and gate reason, with fixed data and a fixed clock."""

from __future__ import annotations

import json

import pytest

from starter.analysis_format import counts, measurement_text, printable
from starter.cli import _json
from starter.render import render_details
from tests.starter.analysis_data import (
    NOW,
    SUCCESS_RATE_INCONCLUSIVE,
    E,
    F,
    S,
    background_with_error,
    failed_step,
    inconclusive_step,
    measured,
    metric,
    view,
)
from tests.starter.test_render import details
from workflows.analysis_run import AnalysisKind
from workflows.models import JobDetails, StepState, StepStatus
from workflows.verdict import MeasurementPhase


def at_analysis_gate(**extra: object) -> JobDetails:
    """Paused in step 2, an analysis step whose verdict was inconclusive; a background run beside it."""
    steps = [StepState(index=0, description="setWeight 20%", status=StepStatus.SUCCEEDED),
             StepState(index=1, description="analysis health", status=StepStatus.RUNNING),
             StepState(index=2, description="setWeight 50%")]
    fields: dict[str, object] = {
        "steps": steps, "pause_remaining": None, "pause_reason": SUCCESS_RATE_INCONCLUSIVE,
        "analyses": [inconclusive_step(), background_with_error()], **extra}
    return details(**fields)


def section(text: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index("Analysis:") + 1
    end = lines.index("", start) if "" in lines[start:] else len(lines)
    return lines[start:end]


def test_a_failed_metric_reads_as_its_phase_last_value_and_counts() -> None:
    lines = section(render_details(details(analyses=[failed_step()]), NOW))
    assert lines[0] == ("  step 2  failed  metric success-rate failed: value 0.93 "
                        "(failureCondition result < 0.95); 1 failed, failureLimit 0")
    assert lines[1] == "    success-rate  failed        last 0.93  1 failed / 1 measured"
    assert lines[2].split() == ["recent:", "0.93", "(failed)"]


def test_the_gate_says_why_it_holds_and_how_to_go_on() -> None:
    text = render_details(at_analysis_gate(), NOW)
    lines = text.splitlines()
    waiting = lines.index(f"Waiting:    {SUCCESS_RATE_INCONCLUSIVE}")
    assert "canaryctl continue web -n shop" in lines[waiting + 1] and "terminate" in lines[waiting + 1]
    assert "Pause left" not in text  # not a timed pause: nothing counts down
    assert "  > [>] 2. analysis health  <- current" in lines
    text.encode("ascii")


def test_every_run_and_metric_is_listed_with_recent_values() -> None:
    lines = section(render_details(at_analysis_gate(), NOW))
    assert lines[0].startswith("  step 2  inconclusive  metric success-rate inconclusive: value no data")
    success, latency = lines[1], lines[3]
    assert success.split()[:4] == ["success-rate", "inconclusive", "last", "no"]
    assert success.endswith("1 successful, 1 inconclusive / 2 measured")
    assert lines[2].strip() == "recent: 0.995, no data"
    assert latency.split()[:4] == ["latency-p99", "running", "last", "135.5"]
    assert lines[4].strip() == "recent: 120, 135.5"
    # Metric names line up, so phases form a column.
    assert success.index("inconclusive") == latency.index("running")
    background = lines.index("  background (from step 1)  running  measuring error-rate")
    assert lines[background + 1].split()[:4] == ["error-rate", "running", "last", "0.02"]
    assert lines[background + 1].endswith("2 successful, 1 error / 3 measured")
    assert lines[background + 2].strip() == "recent: 0.01, 0.02, error"
    assert lines[background + 3].strip() == "last error: connection refused by prometheus:9090"


def test_only_the_newest_values_are_listed() -> None:
    points = measured(*[(S, 0.99 + i / 1000) for i in range(8)])
    run = view(AnalysisKind.STEP, 0, [(metric("success-rate"), points)])
    recent = next(line for line in section(render_details(details(analyses=[run]), NOW)) if "recent:" in line)
    assert recent.strip() == "recent: 0.993, 0.994, 0.995, 0.996, 0.997"


def test_no_analysis_no_section() -> None:
    text = render_details(details(), NOW)
    assert "Analysis:" not in text and "Waiting:" not in text


def test_hostile_text_cannot_drive_the_terminal_or_forge_lines() -> None:
    hostile = "refused\x1b[2J\x1b]0;pwned\x07\nPhase:      healthy \u00e9"
    run = view(AnalysisKind.BACKGROUND, None, [(metric("error-rate"), measured((E, None, hostile)))])
    text = render_details(details(analyses=[run], pause_reason=f"step 2: {hostile}"), NOW)
    text.encode("ascii")
    assert "\x1b[2J" not in text and "\x07" not in text
    assert [line for line in text.splitlines() if line.startswith("Phase:")] == ["Phase:      paused"]
    assert "last error: refused\\x1b[2J\\x1b]0;pwned\\x07\\nPhase:      healthy \\xe9" in text
    assert "  background  running  measuring error-rate" in text.splitlines()


@pytest.mark.parametrize(("phase", "value", "shown"), [
    (MeasurementPhase.SUCCESSFUL, 0.93, "0.93"),
    (MeasurementPhase.FAILED, 0.93, "0.93 (failed)"),
    (MeasurementPhase.INCONCLUSIVE, None, "no data"),
    (MeasurementPhase.INCONCLUSIVE, 0.97, "0.97 (inconclusive)"),
    (MeasurementPhase.ERROR, None, "error"),
    (MeasurementPhase.SUCCESSFUL, 1234567.0, "1.23457e+06"),
])
def test_one_measurement_in_a_few_characters(phase: MeasurementPhase, value: float | None, shown: str) -> None:
    assert measurement_text(measured((phase, value))[0]) == shown


def test_counts_leave_out_zeros() -> None:
    assert counts(failed_step().metrics[0].status) == "1 failed / 1 measured"
    assert counts(background_with_error().metrics[0].status) == "2 successful, 1 error / 3 measured"
    untouched = view(AnalysisKind.STEP, 0, [(metric("success-rate"), [])]).metrics[0].status
    assert counts(untouched) == "0 measured"
    errors = view(AnalysisKind.STEP, 0, [(metric("success-rate"), measured((E, None), (E, None), (F, 0.5)))])
    assert counts(errors.metrics[0].status) == "1 failed, 2 errors / 3 measured"
    assert printable("a\tb") == "a\\tb"


def test_json_output_carries_the_analysis_and_the_gate_reason() -> None:
    document = json.loads(_json(at_analysis_gate()))
    assert document["pause_reason"] == SUCCESS_RATE_INCONCLUSIVE
    step, background = document["analyses"]
    assert (step["kind"], step["step"], step["phase"]) == ("step", 1, "inconclusive")
    assert step["startedAt"].startswith("2025-05-01T11:50:00")
    success = step["metrics"][0]
    assert success["template"] == "health"
    assert success["status"]["metric"] == "success-rate" and success["status"]["lastValue"] is None
    assert [(m["phase"], m["value"], m["message"]) for m in success["measurements"]] == [
        ("successful", 0.995, ""), ("inconclusive", None, "no requests in 1m")]
    assert background["kind"] == "background" and background["metrics"][0]["status"]["errors"] == 1


def test_blue_green_analyses_are_named_for_when_they_run() -> None:
    before = view(AnalysisKind.PRE_PROMOTION, None, [(metric("success-rate", count=3), measured((S, 0.995)))])
    after = view(AnalysisKind.POST_PROMOTION, None, [(metric("success-rate", count=3), measured((F, 0.90)))])
    lines = render_details(details(analyses=[before, after]), NOW).splitlines()
    assert any(line.startswith("  pre-promotion  ") for line in lines)
    assert any(line.startswith("  post-promotion  failed") for line in lines)
