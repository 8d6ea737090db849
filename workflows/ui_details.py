"""What the Temporal UI shows of a job without a query: its static summary and current details.

The UI's workflow page shows a run's *static summary* (set once, when the client starts it) and
the workflow's *current details* (set by the workflow as it goes). Both are written here, from
the job and its state alone, so the workflow calls one function and the text is tested
without a server. Pure and deterministic: safe in the workflow.
"""

from __future__ import annotations

from workflows.models import JobState, Version
from workflows.spec import JobSpec


def static_summary(job: JobSpec) -> str:
    """One line for the run: ``canary job shop/web delivering Deployment web``."""
    return f"canary job {job.namespace}/{job.name} delivering Deployment {job.workload.name}"


def _version(version: Version | None) -> str:
    if version is None:
        return "-"
    images = ", ".join(f"{name}={image}" for name, image in sorted(version.images.items()))
    return f"revision {version.revision} ({images})" if images else f"revision {version.revision}"


def current_details(state: JobState) -> str:
    """Phase, step, weight and both revisions, in Temporal's markdown, one fact per line."""
    if state.current_step is not None and state.steps and state.current_step < len(state.steps):
        step = state.steps[state.current_step]
        step_text = f"{state.current_step + 1}/{len(state.steps)} {step.description} ({step.status.value})"
    else:
        step_text = "-"
    lines = [
        f"**Phase:** {state.phase.value}",
        f"**Step:** {step_text}",
        f"**Weight:** {state.actual_weight}% ({state.canary_replicas} canary pods)",
        f"**Stable:** {_version(state.stable)}",
        f"**Canary:** {_version(state.canary)}",
    ]
    bg = state.blue_green
    if bg.stage is not None:
        # mode: blueGreen, mid-release: which revision users reach, and which one waits in preview.
        lines.append(f"**Blue-green:** {bg.stage.value}; active revision {bg.active_revision}, preview revision "
                     f"{bg.preview_revision if bg.preview_revision is not None else '-'}")
    if state.last_error:
        lines.append(f"**Last error:** {state.last_error}")
    return "\n".join(lines)
