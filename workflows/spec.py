"""The canary delivery job spec: what a user writes in YAML or JSON.

Step names follow Argo Rollouts (``setWeight``, ``pause``, ``setCanaryScale``) so its users
can read a job at a glance. Every field validates on its own and names itself in the error:
a job that cannot run is refused before anything touches the cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from workflows.analysis_spec import Analysis, AnalysisStep, check_step_refs
from workflows.blue_green_spec import BlueGreen, blue_green_problems
from workflows.fields import (
    NAME_PATTERN,
    Duration,
    StrictModel,
    format_duration,
)
from workflows.header_route import HeaderRoute, describe_header_route
from workflows.traffic_spec import RoutingKind, Traffic, traffic_problems
from workflows.webhook_spec import MAX_WEBHOOKS, Webhook, check_unique

# Argo Rollouts users rarely write more than ~30 steps; 100 keeps one release's history
# (about 20 events a step) far below Temporal's limits.
MAX_STEPS = 100
_Strict = StrictModel


class PauseTimeoutAction(StrEnum):
    """What a pause does when its time runs out."""

    CONTINUE = "continue"
    ROLLBACK = "rollback"


class DeliveryMode(StrEnum):
    """How a new version meets traffic: step by step (canary), or all at once by a switch (blue-green)."""

    CANARY = "canary"
    BLUE_GREEN = "blueGreen"


class Pause(_Strict):
    """``pause: {}`` waits for ``continue``; ``pause: {duration: 10m}`` waits that long."""

    duration: Duration | None = None
    on_timeout: PauseTimeoutAction | None = Field(default=None, alias="onTimeout")


class SetWeightStep(_Strict):
    """Send ``setWeight`` percent of traffic to the canary."""

    set_weight: int = Field(alias="setWeight", ge=0, le=100)


class PauseStep(_Strict):
    """Hold the release at its current weight."""

    pause: Pause


class CanaryScale(_Strict):
    """Canary size independent of weight: a replica count or a percentage of the workload."""

    replicas: int | None = Field(default=None, ge=0)
    percent: int | None = Field(default=None, ge=0, le=100)

    @model_validator(mode="after")
    def _one_of(self) -> CanaryScale:
        if (self.replicas is None) == (self.percent is None):
            raise ValueError("give exactly one of replicas or percent")
        return self


class SetCanaryScaleStep(_Strict):
    """Run a given number of canary pods without moving the stable side."""

    set_canary_scale: CanaryScale = Field(alias="setCanaryScale")


class SetHeaderRouteStep(_Strict):
    """Send requests matching a header or a cookie to the canary (with a router); no ``match`` removes it."""

    set_header_route: HeaderRoute = Field(alias="setHeaderRoute")


STEP_KINDS = ("setWeight", "pause", "setCanaryScale", "analysis", "setHeaderRoute")
_PYTHON_NAMES = {"set_weight": "setWeight", "set_canary_scale": "setCanaryScale",
                 "set_header_route": "setHeaderRoute"}


def _step_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        key = next(iter(value), None)
        return _PYTHON_NAMES.get(key, key) if isinstance(key, str) else None
    kinds: dict[type, str] = {SetWeightStep: "setWeight", PauseStep: "pause", SetCanaryScaleStep: "setCanaryScale",
                              AnalysisStep: "analysis", SetHeaderRouteStep: "setHeaderRoute"}
    return kinds.get(type(value))


# Tagged by the step's single key, so an error names the step kind rather than every union branch.
Step = Annotated[
    Annotated[SetWeightStep, Tag("setWeight")]
    | Annotated[PauseStep, Tag("pause")]
    | Annotated[SetCanaryScaleStep, Tag("setCanaryScale")]
    | Annotated[AnalysisStep, Tag("analysis")]
    | Annotated[SetHeaderRouteStep, Tag("setHeaderRoute")],
    Discriminator(_step_kind),
]
AnyStep = SetWeightStep | PauseStep | SetCanaryScaleStep | AnalysisStep | SetHeaderRouteStep


def describe_step(step: AnyStep) -> str:
    """One line for a step, as the CLI and the Temporal UI show it."""
    if isinstance(step, AnalysisStep):
        return f"analysis {', '.join(ref.template_name for ref in step.analysis.templates)}"
    if isinstance(step, SetWeightStep):
        return f"setWeight {step.set_weight}%"
    if isinstance(step, SetHeaderRouteStep):
        return describe_header_route(step.set_header_route)
    if isinstance(step, PauseStep):
        if step.pause.duration is None:
            return "pause until continued"
        return f"pause {format_duration(step.pause.duration)}"
    scale = step.set_canary_scale
    return f"setCanaryScale {scale.replicas} replicas" if scale.replicas is not None else (
        f"setCanaryScale {scale.percent}%")


class DeliveryRules(_Strict):
    """The part of a job that ``update-rules`` may change while a release runs."""

    # Before ``steps``, so the steps' validator knows whether the job has any (blue-green has none).
    blue_green: BlueGreen | None = Field(default=None, alias="blueGreen")
    steps: list[Step] = Field(default_factory=list, max_length=MAX_STEPS, validate_default=True)
    traffic: Traffic = Traffic()
    progress_deadline: Duration = Field(default=timedelta(minutes=10), alias="progressDeadline")
    on_pause_timeout: PauseTimeoutAction = Field(default=PauseTimeoutAction.CONTINUE, alias="onPauseTimeout")
    max_pause: Duration | None = Field(default=None, alias="maxPause")
    analysis: Analysis | None = None
    webhooks: list[Webhook] = Field(default_factory=list, max_length=MAX_WEBHOOKS)

    @field_validator("webhooks")
    @classmethod
    def _unique_webhooks(cls, value: list[Webhook]) -> list[Webhook]:
        check_unique(value)
        return value

    @field_validator("steps", mode="before")
    @classmethod
    def _known_steps(cls, value: Any) -> Any:
        if isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, BaseModel):
                    continue
                if not isinstance(item, dict) or len(item) != 1:
                    raise ValueError(
                        f"step {index + 1} must be a mapping with one key, one of {', '.join(STEP_KINDS)}")
                key = _step_kind(item)
                if key not in STEP_KINDS:
                    raise ValueError(
                        f"step {index + 1}: unknown step {next(iter(item))!r}; "
                        f"known steps: {', '.join(STEP_KINDS)}")
        return value

    @field_validator("steps")
    @classmethod
    def _some_steps(cls, value: list[Any], info: ValidationInfo) -> list[Any]:
        if not value and info.data.get("blue_green") is None:
            raise ValueError("List should have at least 1 item after validation: a canary release needs steps")
        return value

    @field_validator("progress_deadline")
    @classmethod
    def _deadline(cls, value: timedelta) -> timedelta:
        if value.total_seconds() < 1:
            raise ValueError("must be at least 1s")
        return value

    @model_validator(mode="after")
    def _analysis_refs(self) -> DeliveryRules:
        # Each message names its field (steps.N.analysis..., analysis.background...).
        if self.blue_green is None:  # blue-green has no steps; its own check names its analyses
            check_step_refs(self.analysis, self.steps)
        return self

    @model_validator(mode="after")
    def _traffic_fits(self) -> DeliveryRules:
        problems = traffic_problems(self.traffic) + header_route_problems(self.steps, self.traffic)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _blue_green_fits(self) -> DeliveryRules:
        if self.blue_green is None:
            return self
        problems = blue_green_problems(self.blue_green, steps=self.steps, traffic=self.traffic,
                                       analysis=self.analysis, webhook_types=[hook.type for hook in self.webhooks])
        if problems:
            raise ValueError("; ".join(problems))
        return self


def header_route_problems(steps: Sequence[AnyStep], traffic: Traffic) -> list[str]:
    """``setHeaderRoute`` steps the router cannot carry out, each naming its step as written.

    The replica ratio has no route to match a header on. NGINX holds one header condition on
    its canary Ingress (``canary-by-header`` or ``canary-by-cookie``), so there a job names one
    header route, with one match.
    """
    problems: list[str] = []
    named: list[str] = []
    for index, step in enumerate(steps):
        if not isinstance(step, SetHeaderRouteStep):
            continue
        where, route = f"steps.{index}.setHeaderRoute", step.set_header_route
        if not traffic.router:
            problems.append(f"{where}: needs a traffic router (routing: istio, gatewayAPI or nginx); the replica "
                            "ratio cannot route by header")
        elif traffic.routing is RoutingKind.NGINX:
            if len(route.matches) > 1:
                problems.append(f"{where}.match: NGINX routes by one header or one cookie; give one match")
            if named and route.name not in named:
                problems.append(f"{where}.name: NGINX holds one header route at a time; this job already "
                                f"names {named[0]!r}")
        if route.name not in named:
            named.append(route.name)
    return problems


class WorkloadRef(_Strict):
    """The Deployment a job delivers."""

    kind: Literal["Deployment"] = "Deployment"
    name: str = Field(pattern=NAME_PATTERN, max_length=253)


class JobSpec(DeliveryRules):
    """A canary delivery job: which workload, how new versions reach it."""

    name: str = Field(pattern=NAME_PATTERN, max_length=40)
    namespace: str = Field(default="default", pattern=NAME_PATTERN, max_length=63)
    workload: WorkloadRef
    mode: DeliveryMode = DeliveryMode.CANARY

    @model_validator(mode="before")
    @classmethod
    def _blue_green_given(cls, data: Any) -> Any:
        # Before the fields: without it, a blue-green job with no steps would first be told it needs steps.
        if isinstance(data, dict) and data.get("mode") == DeliveryMode.BLUE_GREEN and (
                data.get("blueGreen", data.get("blue_green")) is None):
            raise ValueError("blueGreen: required with mode: blueGreen (at least blueGreen.activeService)")
        return data

    @model_validator(mode="after")
    def _mode_fits(self) -> JobSpec:
        if self.mode is DeliveryMode.BLUE_GREEN and self.blue_green is None:
            raise ValueError("blueGreen: required with mode: blueGreen (at least blueGreen.activeService)")
        if self.mode is DeliveryMode.CANARY and self.blue_green is not None:
            raise ValueError("blueGreen: only used with mode: blueGreen (the mode is canary)")
        return self

    @property
    def blue_green_mode(self) -> bool:
        """Whether releases switch Services (blue-green) rather than walk steps (canary)."""
        return self.mode is DeliveryMode.BLUE_GREEN

    @property
    def rules(self) -> DeliveryRules:
        """The steps and traffic policy alone."""
        return DeliveryRules.model_validate({name: getattr(self, name) for name in DeliveryRules.model_fields})

    def with_rules(self, rules: DeliveryRules) -> JobSpec:
        """This job under other delivery rules."""
        return self.model_copy(update=dict(rules))


def workflow_id(namespace: str, name: str) -> str:
    """Readable, deterministic workflow id: one workflow per job, ``canary.<namespace>.<job>``.

    Both parts are DNS labels, which never contain ``.``, so no two jobs share an id (the
    first scheme, ``canary-<namespace>-<job>``, gave ``a-b``/``c`` and ``a``/``b-c`` the same
    one). Not ``/``, the second scheme: Temporal's HTTP API cannot name an id with a slash, and
    canaryctl's fast path (``starter/http_ops.py``) speaks that API.
    """
    return f"canary.{namespace}.{name}"


def older_workflow_ids(namespace: str, name: str) -> tuple[str, str]:
    """The ids jobs created by older clients run under until they end; clients still find them."""
    return slash_workflow_id(namespace, name), legacy_workflow_id(namespace, name)


def slash_workflow_id(namespace: str, name: str) -> str:
    """``canary/<namespace>/<job>``: jobs created before the HTTP path run under it."""
    return f"canary/{namespace}/{name}"


def legacy_workflow_id(namespace: str, name: str) -> str:
    """``canary-<namespace>-<job>``: the first scheme's id."""
    return f"canary-{namespace}-{name}"


def field_path(loc: Sequence[str | int]) -> str:
    """A pydantic error location as the user writes the field: ``steps.0.setWeight``.

    A tagged step adds its tag to the location, which repeats the step's own key
    (``steps.0.setWeight.setWeight``); the workflow, the API and ``canaryctl`` all name the
    field the way it is written in the job, so the repetition is dropped here, once.
    """
    parts = list(loc)
    return ".".join(str(part) for index, part in enumerate(parts)
                    if not (part in STEP_KINDS and index + 1 < len(parts) and parts[index + 1] == part))


def validation_message(error: ValidationError) -> str:
    """Every problem pydantic found, as ``<field>: <reason>`` joined by ``; ``."""
    problems = []
    for item in error.errors():
        path = field_path(item["loc"])
        reason = str(item["msg"]).removeprefix("Value error, ")
        problems.append(f"{path}: {reason}" if path else reason)
    return "; ".join(problems)
