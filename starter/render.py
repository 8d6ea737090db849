"""Plain-text views of jobs for ``canaryctl``: pure functions from models to strings.

Kept apart from the CLI so the views can be tested with fixed data and a fixed clock, and so
an HTTP API's text endpoints could reuse them. ASCII only: the output must survive any
terminal encoding and ``| grep``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from starter.analysis_format import printable, render_analyses
from starter.client import JobSummary
from workflows.header_route import describe_header_route
from workflows.models import JobDetails, JobVersions, Phase, StepState, StepStatus, Version

_MARKS = {
    StepStatus.SUCCEEDED: "[x]",
    StepStatus.RUNNING: "[>]",
    StepStatus.PENDING: "[ ]",
    StepStatus.FAILED: "[!]",
    StepStatus.SKIPPED: "[-]",
    StepStatus.STOPPED: "[/]",
}
_BOLD, _RESET = "\x1b[1m", "\x1b[0m"
EVENTS_SHOWN = 5
# Phases in which the job waits for the cluster rather than for its steps; said in words.
PHASE_NOTES = {
    Phase.WORKLOAD_MISSING: "the Deployment is gone; the job waits for it to come back",
    Phase.ERROR: "the cluster refuses what the job must do; it retries (see the last error)",
}


def age(since: datetime | None, now: datetime) -> str:
    """``3m`` / ``2h`` / ``5d`` like kubectl: how long ago, in the largest whole unit."""
    if since is None:
        return "-"
    seconds = max(0, int((now - since).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def duration(value: timedelta) -> str:
    """``59m55s``, ``1h``, ``2d3h``: every non-zero unit, for a countdown that reads well."""
    seconds = max(0, int(value.total_seconds()))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


def timestamp(value: datetime | None) -> str:
    """A point in time in the viewer's local zone, to the second."""
    if value is None:
        return "-"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def image_pairs(images: Mapping[str, str], separator: str = ", ") -> str:
    """``app=nginx:1.25, sidecar=envoy:1`` in container order: every image with its container."""
    return separator.join(f"{name}={image}" for name, image in sorted(images.items()))


def images(version: Version) -> str:
    """``nginx:1.25`` for one container, ``app=...,sidecar=...`` for several (no spaces: a table cell)."""
    if len(version.images) == 1:
        return next(iter(version.images.values()))
    return image_pairs(version.images, ",") or "-"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, the last one unpadded."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [str(cell).ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        lines.append("  ".join([*cells, str(row[-1])]).rstrip())
    return "\n".join(lines)


def _version_line(role: str, version: Version | None, now: datetime) -> str:
    if version is None:
        return f"  {role:<7} -"
    return (f"  {role:<7} rev {version.revision}  {images(version)}  "
            f"since {timestamp(version.started)} ({age(version.started, now)} ago)")


def pause_left(details: JobDetails, now: datetime) -> timedelta | None:
    """Time left in the running timed pause, counted down from its end on the caller's clock."""
    if details.pause_until is not None:
        return max(timedelta(0), details.pause_until - now)
    return details.pause_remaining


def _clock(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%H:%M")


def step_story(step: StepState) -> str:
    """What happened to one step, in words: ``done 12:03 in 40s``, ``waited 5m, continued by alice``.

    Told from the step's own record, so a finished release reads as it happened, whatever ran since.
    """
    took = duration(step.finished - step.started) if step.started and step.finished else None
    by = f" by {step.actor}" if step.actor and step.message != "continued" else ""
    if step.status == StepStatus.PENDING:
        return ""
    if step.status == StepStatus.RUNNING:
        return f"since {_clock(step.started)} UTC" if step.started else ""
    if step.status == StepStatus.SKIPPED:
        return f"{step.message or 'skipped'}{by}"
    if step.message in ("continued", "ran out"):
        how = f"continued by {step.actor}" if step.message == "continued" and step.actor else step.message
        return f"waited {took}, {how}" if took else how
    if step.status == StepStatus.SUCCEEDED:
        if not step.finished:
            return ""
        return f"done {_clock(step.finished)} UTC" + (f" in {took}" if took else "")
    # Failed or stopped: what cut it off, who, and after how long it had run.
    text = f"{step.message or step.status.value}{by}"
    return f"{text}, after {took}" if took else text


def _step_line(step: StepState, current: bool, details: JobDetails, color: bool, now: datetime) -> str:
    text = f"{_MARKS.get(step.status, '[?]')} {step.index + 1}. {step.description}"
    left = pause_left(details, now)
    if current and step.status == StepStatus.RUNNING and left is not None:
        text += f"  ({duration(left)} left)"
    story = step_story(step)
    if story and step.status != StepStatus.RUNNING:
        text += f"  - {story}"
    elif step.message:
        text += f"  - {step.message}"
    if not current:
        return f"    {text}"
    return f"  > {_BOLD}{text}{_RESET}" if color else f"  > {text}  <- current"


def _router_lines(details: JobDetails) -> list[str]:
    """What the router's object holds, read back after the job's last write, and the header routes."""
    if details.routing == "replicaRatio":
        return []
    held = ", ".join(f"{printable(r.route)} {r.stable}/{r.canary}" for r in details.routes) or "not set up yet"
    lines = [f"Router:     {details.routing} (stable/canary: {held})",
             # Beside each other, not shares of one count: stable shrinks only with dynamicStableScale.
             f"Pods:       {details.stable_replicas} stable, {details.canary_replicas} canary"]
    # A/B routes of the running release: requests that match go to the canary at any weight.
    lines += [f"Header:     {printable(describe_header_route(route))}" for route in details.header_routes]
    return lines


def _blue_green_lines(details: JobDetails, now: datetime) -> list[str]:
    """mode: blueGreen: which revision the active and preview Services serve, and when blue goes."""
    bg = details.blue_green
    if bg is None:
        return []
    active = f"revision {bg.active_revision}" if bg.active_revision is not None else "-"
    if bg.scale_down_at is not None and bg.stage is not None and bg.stage.value == "switched":
        left = max(timedelta(0), bg.scale_down_at - now)
        active += f" (green; the previous revision stays up {duration(left)} more)"
    lines = [f"Active:     Service/{printable(bg.active_service)} -> {active}"]
    if bg.preview_service is not None:
        preview = f"revision {bg.preview_revision}" if bg.preview_revision is not None else "nothing in preview"
        lines.append(f"Preview:    Service/{printable(bg.preview_service)} -> {preview}")
    return lines


def render_details(details: JobDetails, now: datetime, *, color: bool = False) -> str:
    """``canaryctl get``: what the job is, where its release stands, what runs where."""
    weight = f"{details.weight}%"
    if details.actual_weight != details.weight:
        weight += f" (actual {details.actual_weight}%)"
    weight += f", {details.canary_replicas} of {details.replicas} pods canary"
    lines = [
        f"Name:       {details.name}",
        f"Namespace:  {details.namespace}",
        f"Phase:      {details.phase.value}"
        + (f" ({PHASE_NOTES[details.phase]})" if details.phase in PHASE_NOTES else ""),
        f"Mode:       {details.mode}",
        f"Workload:   Deployment/{details.workload}",
        f"Weight:     {weight}",
    ]
    lines.extend(_blue_green_lines(details, now))
    lines += _router_lines(details)
    left = pause_left(details, now)
    if left is not None:
        lines.append(f"Pause left: {duration(left)}")
    if details.pause_reason:
        # A gate that is not a pause step (an inconclusive analysis): say why it holds, and the way on.
        lines.append(f"Waiting:    {printable(details.pause_reason)}")
        lines.append(f"            (canaryctl continue {details.name} -n {details.namespace} goes on; "
                     "terminate rolls back)")
    lines.append(f"Last error: {details.last_error or '-'}")
    lines.append("")
    lines.append("Steps:")
    if not details.steps:
        lines.append("    (no release running)")
    for step in details.steps:
        lines.append(_step_line(step, step.index == details.current_step, details, color, now))
    lines.append("")
    lines.append("Versions:")
    lines.append(_version_line("stable", details.stable, now))
    lines.append(_version_line("canary", details.canary, now))
    if details.analyses:
        lines.append("")
        lines.append("Analysis:")
        lines.extend(render_analyses(details.analyses))
    if details.events:
        lines.append("")
        lines.append("Events:")
        for event in details.events[-EVENTS_SHOWN:]:
            by = f" (by {event.actor})" if event.actor else ""
            lines.append(f"  {timestamp(event.at)}  {event.kind}: {event.message}{by}")
    return "\n".join(lines)


def render_versions(result: JobVersions) -> str:
    """``canaryctl history``: every version the job remembers, oldest first."""
    by_revision = {v.revision: v for v in result.history}
    for current in (result.stable, result.canary):
        if current is not None:
            by_revision.setdefault(current.revision, current)
    roles = {}
    if result.stable is not None:
        roles[result.stable.revision] = "stable"
    if result.canary is not None:
        roles[result.canary.revision] = "canary"
    rows = [
        [str(v.revision), roles.get(v.revision, ""), images(v), v.template_hash[:10], timestamp(v.started),
         timestamp(v.finished), v.outcome.value if v.outcome else "-", v.trigger.value, v.reason or "-"]
        for v in sorted(by_revision.values(), key=lambda v: v.revision)
    ]
    if not rows:
        return "no versions yet"
    header = ["REVISION", "ROLE", "IMAGES", "HASH", "STARTED", "FINISHED", "OUTCOME", "TRIGGER", "REASON"]
    return table(header, rows)


def render_jobs(jobs: Sequence[JobSummary], now: datetime) -> str:
    """``canaryctl list``."""
    if not jobs:
        return "no canary jobs"
    rows = [[j.namespace, j.name, j.workload or "-", j.phase or "-", j.status, age(j.started, now)]
            for j in jobs]
    return table(["NAMESPACE", "NAME", "WORKLOAD", "PHASE", "STATUS", "AGE"], rows)

