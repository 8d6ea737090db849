"""The ``blueGreen`` part of a job: the second delivery mode, with Argo Rollouts' field names.

A blue-green release brings the new version (green) up at full size beside the old one (blue),
behind a preview Service, and then moves the user's active Service over in one write. Field
names are Argo Rollouts' ``strategy.blueGreen`` ones, so a Rollout's YAML moves over as it is.
The spec only says *what*; whether the named Services exist is checked against the cluster
when the job is applied.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field, model_validator

from workflows.analysis_spec import Analysis, AnalysisRef, check_ref
from workflows.fields import StrictModel
from workflows.traffic_spec import SERVICE_NAME_PATTERN, RoutingKind, Traffic

# A year, like every other duration a job holds (workflows.fields.MAX_DURATION).
MAX_SECONDS = 365 * 86400
DEFAULT_SCALE_DOWN_DELAY = 30  # Argo Rollouts' default


class BlueGreen(StrictModel):
    """How a blue-green release meets traffic: the Services, the gate, the analyses, the delay."""

    active_service: str = Field(alias="activeService", pattern=SERVICE_NAME_PATTERN, max_length=63)
    preview_service: str | None = Field(default=None, alias="previewService", pattern=SERVICE_NAME_PATTERN,
                                        max_length=63)
    auto_promotion_enabled: bool = Field(default=True, alias="autoPromotionEnabled")
    auto_promotion_seconds: int | None = Field(default=None, alias="autoPromotionSeconds", ge=1, le=MAX_SECONDS)
    scale_down_delay_seconds: int = Field(default=DEFAULT_SCALE_DOWN_DELAY, alias="scaleDownDelaySeconds", ge=0,
                                          le=MAX_SECONDS)
    pre_promotion_analysis: AnalysisRef | None = Field(default=None, alias="prePromotionAnalysis")
    post_promotion_analysis: AnalysisRef | None = Field(default=None, alias="postPromotionAnalysis")

    @model_validator(mode="after")
    def _consistent(self) -> BlueGreen:
        if self.preview_service is not None and self.preview_service == self.active_service:
            raise ValueError("blueGreen.previewService: must differ from activeService")
        if self.auto_promotion_seconds is not None and not self.auto_promotion_enabled:
            # Argo Rollouts ignores it then; a field that silently does nothing is refused instead.
            raise ValueError("blueGreen.autoPromotionSeconds: has no effect with autoPromotionEnabled: false "
                             "(the release waits for continue or promote); remove one of them")
        return self


def blue_green_problems(blue_green: BlueGreen, *, steps: Sequence[object], traffic: Traffic,
                        analysis: Analysis | None, webhook_types: Sequence[str]) -> list[str]:
    """What in the rest of the job does not fit a blue-green release, each naming its field."""
    problems: list[str] = []
    if steps:
        problems.append("steps: not used with blueGreen (as in Argo Rollouts, a blue-green release has no "
                        "steps); gate it with blueGreen.autoPromotionEnabled, autoPromotionSeconds or "
                        "prePromotionAnalysis")
    if traffic.routing is not RoutingKind.REPLICA_RATIO:
        problems.append(f"traffic.routing: {traffic.routing} is not supported with blueGreen; the job switches "
                        "blueGreen.activeService itself (use routing: replicaRatio)")
    if analysis is not None and analysis.background is not None:
        problems.append("analysis.background: not used with blueGreen (there are no steps to run beside); use "
                        "blueGreen.prePromotionAnalysis or postPromotionAnalysis")
    for kind in sorted(set(webhook_types) & {"rollout", "confirm-promotion"}):
        problems.append(f"webhooks: a {kind} webhook is not used with blueGreen (there are no steps, and "
                        "autoPromotionEnabled: false is the gate before promotion); pre-rollout and "
                        "post-rollout webhooks are")
    for field, ref in (("prePromotionAnalysis", blue_green.pre_promotion_analysis),
                       ("postPromotionAnalysis", blue_green.post_promotion_analysis)):
        if ref is not None:
            problems += _analysis_problems(analysis, ref, f"blueGreen.{field}")
    return problems


def _analysis_problems(analysis: Analysis | None, ref: AnalysisRef, path: str) -> list[str]:
    """A pre- or post-promotion analysis must run, and end: the release waits for its verdict."""
    try:
        check_ref(analysis, ref, path)
    except ValueError as error:
        return [str(error)]
    assert analysis is not None
    return [f"{path}: metric {metric.name!r} of template {item.template_name!r} has no count; the release "
            "waits for this analysis's verdict, which needs a count of measurements"
            for item in ref.templates for metric in analysis.template(item.template_name).metrics
            if metric.count is None]
