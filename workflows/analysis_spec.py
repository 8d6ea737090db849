"""Metric analysis in a job spec: templates, their metrics, and the references that run them.

Names and shapes follow Argo Rollouts' ``AnalysisTemplate`` so its users read a job at a glance:
a template declares ``args`` and ``metrics``; a ``background`` analysis or an ``analysis`` step
references templates by ``templateName`` and gives the args their values. Every mistake that
can be seen before a release (an unknown provider, a CEL condition that does not compile, a
``{{args.x}}`` nobody defines, a negative limit) is refused here, naming its field, so a job is
refused at ``apply``/``update-rules`` instead of failing at its first measurement.

This module is pure: it renders queries and checks CEL syntax, and measures nothing. The
measurement (HTTP to Prometheus or a web endpoint, CEL evaluation on the answer) is the
``measure_metric`` activity in ``activities/metrics``; the verdict over measurements is
:mod:`workflows.verdict`.

CEL: conditions are compiled here (syntax, and a trial run for unknown names), which is pure
CPU work. The workflow imports this module passed through the sandbox (as ``workflows/canary.py``
imports every ``workflows`` module), so cel-python runs with real builtins there;
``tests/analysis/test_sandbox.py`` validates a spec inside the real sandbox. cel-python is
imported, and its parser built, once, on first use (the import alone is a quarter of
``canaryctl lint``'s start-up, the parser about a third of a second of CPU: a job without
analysis must pay for neither); the worker builds it at start (:func:`cel_environment`), so the
first compile in a workflow task does not pay for it either. A first use inside a workflow
imports cel-python passed through the sandbox, as the module-level import did.
"""

from __future__ import annotations

import contextlib
import functools
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from workflows import builtin_checks
from workflows.fields import NAME_PATTERN, Duration, format_duration
from workflows.fields import StrictModel as _Strict

if TYPE_CHECKING:
    import celpy
    from celpy.celparser import CELParseError
    from celpy.evaluation import CELEvalError

MAX_TEMPLATES = 20
MAX_METRICS = 20
MAX_ARGS = 20
MAX_COUNT = 10_000
MAX_LIMIT = 10_000
MAX_CONDITION = 1_000
MAX_QUERY = 10_000
MAX_URL = 2_048
MEASURE_METRIC_ACTIVITY = "measure_metric"
PROVIDERS = ("prometheus", "web", "builtin", "baseline")
MAX_RANGE_POINTS = 11_000  # Prometheus refuses range queries of more points

ARG_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*$"
_ARG_REF = re.compile(r"\{\{\s*args\.([A-Za-z0-9_-]+)\s*\}\}")
_URL = re.compile(r"^https?://\S+$")
# The JSONPath subset the web provider reads: ``$.a.b[0].c``, optionally in Argo's ``{...}``.
JSON_PATH_PATTERN = r"^\{?\$(\.[A-Za-z_][A-Za-z0-9_-]*|\[\d+\])*\}?$"



@dataclass(frozen=True)
class _Cel:
    """cel-python's parser and the parts of it a condition check reads."""

    environment: celpy.Environment
    types: ModuleType  # celpy.celtypes
    parse_error: type[CELParseError]
    eval_error: type[CELEvalError]


@contextlib.contextmanager
def _outside_sandbox() -> Iterator[None]:
    # Inside a workflow the sandbox would import cel-python (and lark, pendulum...) afresh;
    # passed through, it is the worker's own copy, as when this module imported it at its top.
    # ``temporalio.workflow`` is only looked up: this module must not load the SDK itself.
    workflow = sys.modules.get("temporalio.workflow")
    if workflow is not None and workflow.in_workflow():
        with workflow.unsafe.imports_passed_through():
            yield
    else:
        yield


@functools.cache
def _cel() -> _Cel:
    with _outside_sandbox():
        import celpy
        from celpy import celtypes
        from celpy.celparser import CELParseError
        from celpy.evaluation import CELEvalError

        return _Cel(celpy.Environment(), celtypes, CELParseError, CELEvalError)


def cel_environment() -> celpy.Environment:
    """The CEL parser, imported and built once on first use; the worker calls this at start (module docstring)."""
    return _cel().environment


def check_condition(text: str) -> str:
    """Refuse a CEL condition on ``result`` that cannot run; return it unchanged otherwise.

    Compiling finds syntax errors. A trial evaluation with ``result = 0.0`` (pure: no I/O)
    finds names other than ``result`` and expressions that give a number or string where a
    condition must say true or false; errors that depend on the value (``1 / result``) pass.
    """
    if not text.strip():
        raise ValueError("must not be empty")
    cel = _cel()
    try:
        ast = cel.environment.compile(text)
    except cel.parse_error as err:
        where = f" at line {err.line}, column {err.column}" if err.line is not None else ""
        raise ValueError(f"CEL expression {text!r} does not compile: syntax error{where}") from None
    try:
        answer = cel.environment.program(ast).evaluate({"result": cel.types.DoubleType(0.0)})
    except cel.eval_error as err:
        if "undeclared reference" in str(err):
            raise ValueError(f"CEL expression {text!r} uses a name other than result: {_undeclared(err)}") from None
        return text
    if isinstance(answer, cel.eval_error):
        return text
    if not isinstance(answer, cel.types.BoolType):
        raise ValueError(f"CEL expression {text!r} must give true or false, not {answer!r}")
    return text


def _undeclared(err: Exception) -> str:
    for arg in err.args:
        if isinstance(arg, tuple) and arg and isinstance(arg[0], str):
            return arg[0]
    match = re.search(r"undeclared reference to '([^']*)'", str(err))
    return match.group(1) if match else "unknown"


def arg_names(text: str | None) -> list[str]:
    """The ``{{args.x}}`` names a string uses, in order."""
    return _ARG_REF.findall(text or "")


def substitute(text: str, values: Mapping[str, str]) -> str:
    """Replace every ``{{args.x}}`` by its value; a name without a value is an error naming it."""
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise ValueError(f"no value for {{{{args.{name}}}}}")
        return values[name]
    return _ARG_REF.sub(one, text)


class Arg(_Strict):
    """A template argument: ``{{args.<name>}}`` in queries and URLs; ``value`` is its default."""

    name: str = Field(pattern=ARG_NAME_PATTERN, max_length=63)
    value: str | None = Field(default=None, max_length=4_096)


class ArgValue(_Strict):
    """A value for a template argument, given where templates are referenced."""

    name: str = Field(pattern=ARG_NAME_PATTERN, max_length=63)
    value: str = Field(max_length=4_096)


class PrometheusProvider(_Strict):
    """An instant PromQL query; its answer must be a scalar or a vector of at most one sample."""

    address: str | None = Field(default=None, max_length=MAX_URL)
    query: str = Field(min_length=1, max_length=MAX_QUERY)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and not _URL.match(value):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value


def _optional_url(value: str | None) -> str | None:
    if value is not None and not _URL.match(value):
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    return value


def _workload_field(value: str, what: str) -> str:
    """A workload or namespace that may hold ``{{args.x}}``; with args as plain names it must be a name."""
    builtin_checks.check_name(_ARG_REF.sub("x", value), what)
    return value


def _stable_workload(value: str) -> str:
    if value.endswith(builtin_checks.CANARY_SUFFIX):
        raise ValueError(f"{value!r}: name the stable Deployment (e.g. web); the check reads its canary "
                         f"<workload>{builtin_checks.CANARY_SUFFIX} itself")
    return _workload_field(value, "workload")


class BuiltinProvider(_Strict):
    """A built-in check (Flagger-like): a check name stands for PromQL over Istio's standard metrics.

    ``workload`` is the job's Deployment (the stable one, e.g. ``web``); the check measures its
    canary, ``<workload>-canary``. The value is judged by the metric's ``successCondition`` /
    ``failureCondition`` as any other: ``request-success-rate`` and ``request-error-rate`` are
    shares in 0..1 (e.g. ``result >= 0.99``), ``request-duration`` is the p99 latency in
    milliseconds (e.g. ``result <= 500``). No traffic in ``window`` is no data (inconclusive).
    See :mod:`workflows.builtin_checks` for the queries.
    """

    address: str | None = Field(default=None, max_length=MAX_URL)
    check: str = Field(max_length=63)
    workload: str = Field(min_length=1, max_length=253)
    namespace: str = Field(min_length=1, max_length=253)
    window: Duration = timedelta(minutes=1)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        return _optional_url(value)

    @field_validator("check")
    @classmethod
    def _check(cls, value: str) -> str:
        if value not in builtin_checks.CHECKS:
            raise ValueError(f"unknown check {value!r}; known checks: {', '.join(builtin_checks.CHECKS)}")
        return value

    @field_validator("workload")
    @classmethod
    def _workload(cls, value: str) -> str:
        return _stable_workload(value)

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        return _workload_field(value, "namespace")

    @field_validator("window")
    @classmethod
    def _window(cls, value: timedelta) -> timedelta:
        if value.total_seconds() < 1:
            raise ValueError("must be at least 1s")
        return value

    def promql(self) -> str:
        """The query for the canary (rendered args only: a ValueError names a bad workload or namespace)."""
        return builtin_checks.check_query(self.check, self.workload, self.namespace, self.window)


WORKLOAD_PLACEHOLDER = "{{workload}}"
NAMESPACE_PLACEHOLDER = "{{namespace}}"


class BaselineProvider(_Strict):
    """Canary against baseline: the same series for the canary and the stable pods, compared.

    Either a built-in ``check`` (``request-error-rate`` or ``request-duration``) or a ``query``
    in which ``{{workload}}`` stands for ``<workload>-canary`` on one side and ``<workload>``
    on the other (and ``{{namespace}}`` for ``namespace``). Both are range queries over the
    last ``window`` at every ``step``; each is judged by :func:`workflows.comparison.compare`
    (a one-sided Mann-Whitney U test and the relative difference of medians), so the metric
    takes no ``successCondition``/``failureCondition``: the comparison decides the phase and
    the measured value is the relative difference. A built-in check's rates are over one
    ``step`` each, so its samples do not overlap; choose a ``step`` in which the canary gets
    many requests (a few dozen at least), since a rate over a handful of requests is mostly 0
    and makes an equal canary look better than stable, and a worse one harder to see.
    """

    address: str | None = Field(default=None, max_length=MAX_URL)
    check: str | None = Field(default=None, max_length=63)
    query: str | None = Field(default=None, min_length=1, max_length=MAX_QUERY)
    workload: str = Field(min_length=1, max_length=253)
    namespace: str | None = Field(default=None, min_length=1, max_length=253)
    window: Duration = timedelta(minutes=10)
    step: Duration = timedelta(seconds=30)
    higher_is_worse: bool | None = Field(default=None, alias="higherIsWorse")
    max_difference: float = Field(default=0.1, alias="maxDifference", ge=0, le=1_000)
    alpha: float = Field(default=0.05, gt=0, le=0.5)
    min_samples: int = Field(default=10, alias="minSamples", ge=3, le=MAX_RANGE_POINTS)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        return _optional_url(value)

    @field_validator("check")
    @classmethod
    def _check(cls, value: str | None) -> str | None:
        known = ", ".join(builtin_checks.BASELINE_CHECKS)
        if value == builtin_checks.REQUEST_SUCCESS_RATE:
            raise ValueError(f"compare {builtin_checks.REQUEST_ERROR_RATE} instead: success rates near 1 differ "
                             f"by a few percent even when errors rise fifty-fold; known checks: {known}")
        if value is not None and value not in builtin_checks.BASELINE_CHECKS:
            raise ValueError(f"unknown check {value!r}; known checks: {known}")
        return value

    @field_validator("workload")
    @classmethod
    def _workload(cls, value: str) -> str:
        return _stable_workload(value)

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str | None) -> str | None:
        return None if value is None else _workload_field(value, "namespace")

    @field_validator("window", "step")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value.total_seconds() < 1:
            raise ValueError("must be at least 1s")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> BaselineProvider:
        if (self.check is None) == (self.query is None):
            raise ValueError("give exactly one of check or query")
        if self.query is not None:
            if WORKLOAD_PLACEHOLDER not in self.query:
                raise ValueError(f"query: must use {WORKLOAD_PLACEHOLDER} (it becomes <workload>-canary and "
                                 f"<workload>), or the canary would be compared with itself")
            if NAMESPACE_PLACEHOLDER in self.query and self.namespace is None:
                raise ValueError(f"query: uses {NAMESPACE_PLACEHOLDER}; give namespace")
        elif self.namespace is None:
            raise ValueError("namespace: a built-in check needs the namespace of the workload")
        if self.check is not None and self.higher_is_worse is not None:
            natural = builtin_checks.BASELINE_CHECKS[self.check]
            if self.higher_is_worse != natural:
                raise ValueError(f"higherIsWorse: a higher {self.check} is {'worse' if natural else 'better'}; "
                                 f"omit higherIsWorse for a built-in check")
        if self.step > self.window:
            raise ValueError(f"step: {format_duration(self.step)} is longer than the window "
                             f"{format_duration(self.window)}")
        if self.window / self.step > MAX_RANGE_POINTS:
            raise ValueError(f"step: window / step must be at most {MAX_RANGE_POINTS} points")
        return self

    @property
    def worse_when_higher(self) -> bool:
        """Whether a higher value is worse: given, else the check's nature, else true (errors, latency)."""
        if self.higher_is_worse is not None:
            return self.higher_is_worse
        return builtin_checks.BASELINE_CHECKS.get(self.check or "", True)

    def queries(self) -> tuple[str, str]:
        """The canary's and the stable pods' queries (rendered args only; a bad name is a ValueError)."""
        builtin_checks.check_name(self.workload, "workload")
        sides = (builtin_checks.canary_workload(self.workload), self.workload)
        if self.check is not None:
            assert self.namespace is not None
            return (builtin_checks.series_query(self.check, sides[0], self.namespace, self.step),
                    builtin_checks.series_query(self.check, sides[1], self.namespace, self.step))
        assert self.query is not None
        query = self.query
        if self.namespace is not None:
            query = query.replace(NAMESPACE_PLACEHOLDER, builtin_checks.check_name(self.namespace, "namespace"))
        return query.replace(WORKLOAD_PLACEHOLDER, sides[0]), query.replace(WORKLOAD_PLACEHOLDER, sides[1])


class Header(_Strict):
    """One request header of the web provider (Argo's ``{key, value}``)."""

    key: str = Field(min_length=1, max_length=256, pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
    value: str = Field(max_length=4_096)


class WebProvider(_Strict):
    """An HTTP endpoint answering JSON; ``jsonPath`` (``$.a.b[0].c``) picks the value."""

    url: str = Field(max_length=MAX_URL)
    method: Literal["GET", "POST"] = "GET"
    headers: list[Header] = Field(default_factory=list, max_length=20)
    body: str | None = Field(default=None, max_length=MAX_QUERY)
    json_path: str = Field(alias="jsonPath", pattern=JSON_PATH_PATTERN, max_length=512)
    timeout_seconds: int = Field(default=10, alias="timeoutSeconds", ge=1, le=300)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not _URL.match(_ARG_REF.sub("x", value)):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value


class Provider(_Strict):
    """Where a metric's value comes from: exactly one of ``prometheus``, ``web``, ``builtin`` or ``baseline``."""

    prometheus: PrometheusProvider | None = None
    web: WebProvider | None = None
    builtin: BuiltinProvider | None = None
    baseline: BaselineProvider | None = None

    @model_validator(mode="before")
    @classmethod
    def _known(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            unknown = [key for key in value if key not in PROVIDERS]
            if unknown:
                raise ValueError(f"unknown provider {unknown[0]!r}; known providers: {', '.join(PROVIDERS)}")
        return value

    @model_validator(mode="after")
    def _one(self) -> Provider:
        if sum(getattr(self, name) is not None for name in PROVIDERS) != 1:
            raise ValueError(f"give exactly one provider, one of {', '.join(PROVIDERS)}")
        return self

    @property
    def kind(self) -> str:
        """``prometheus``, ``web``, ``builtin`` or ``baseline``."""
        return next(name for name in PROVIDERS if getattr(self, name) is not None)

    def texts(self) -> dict[str, str]:
        """Every string that may hold ``{{args.x}}``, by its field path under ``provider``."""
        if self.prometheus is not None:
            return {"prometheus.query": self.prometheus.query}
        if self.builtin is not None:
            return {"builtin.workload": self.builtin.workload, "builtin.namespace": self.builtin.namespace}
        if self.baseline is not None:
            texts = {"baseline.workload": self.baseline.workload}
            if self.baseline.namespace is not None:
                texts["baseline.namespace"] = self.baseline.namespace
            if self.baseline.query is not None:
                texts["baseline.query"] = self.baseline.query
            return texts
        assert self.web is not None
        texts = {"web.url": self.web.url}
        if self.web.body is not None:
            texts["web.body"] = self.web.body
        for index, header in enumerate(self.web.headers):
            texts[f"web.headers.{index}.value"] = header.value
        return texts

    def rendered(self, values: Mapping[str, str]) -> Provider:
        """This provider with ``{{args.x}}`` replaced by ``values``."""
        if self.prometheus is not None:
            return self.model_copy(update={"prometheus": self.prometheus.model_copy(
                update={"query": substitute(self.prometheus.query, values)})})
        if self.builtin is not None:
            return self.model_copy(update={"builtin": self.builtin.model_copy(update={
                "workload": substitute(self.builtin.workload, values),
                "namespace": substitute(self.builtin.namespace, values)})})
        if self.baseline is not None:
            baseline = self.baseline
            return self.model_copy(update={"baseline": baseline.model_copy(update={
                "workload": substitute(baseline.workload, values),
                "namespace": None if baseline.namespace is None else substitute(baseline.namespace, values),
                "query": None if baseline.query is None else substitute(baseline.query, values)})})
        assert self.web is not None
        web = self.web.model_copy(update={
            "url": substitute(self.web.url, values),
            "body": substitute(self.web.body, values) if self.web.body is not None else None,
            "headers": [h.model_copy(update={"value": substitute(h.value, values)}) for h in self.web.headers],
        })
        return self.model_copy(update={"web": web})

    def summary(self) -> str:
        """What a rendered provider asks, for people: the query, the URL, or the canary's query."""
        if self.prometheus is not None:
            return self.prometheus.query
        if self.builtin is not None:
            return self.builtin.promql()
        if self.baseline is not None:
            return self.baseline.queries()[0]
        assert self.web is not None
        return self.web.url


Condition = Annotated[str, Field(min_length=1, max_length=MAX_CONDITION)]


class Metric(_Strict):
    """One measured quantity and how its measurements are judged (Argo's limits and conditions)."""

    name: str = Field(pattern=NAME_PATTERN, max_length=63)
    interval: Duration
    count: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    initial_delay: Duration | None = Field(default=None, alias="initialDelay")
    failure_limit: int = Field(default=0, alias="failureLimit", ge=0, le=MAX_LIMIT)
    inconclusive_limit: int = Field(default=0, alias="inconclusiveLimit", ge=0, le=MAX_LIMIT)
    consecutive_error_limit: int = Field(default=4, alias="consecutiveErrorLimit", ge=0, le=MAX_LIMIT)
    success_condition: Condition | None = Field(default=None, alias="successCondition")
    failure_condition: Condition | None = Field(default=None, alias="failureCondition")
    provider: Provider

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: timedelta) -> timedelta:
        if value.total_seconds() < 1:
            raise ValueError("must be at least 1s")
        return value

    @field_validator("success_condition", "failure_condition")
    @classmethod
    def _condition(cls, value: str | None) -> str | None:
        return None if value is None else check_condition(value)

    @model_validator(mode="after")
    def _judged_by_comparison(self) -> Metric:
        # A baseline comparison decides the phase itself; a condition beside it would be ignored.
        if self.provider.baseline is not None:
            for field, value in (("successCondition", self.success_condition),
                                 ("failureCondition", self.failure_condition)):
                if value is not None:
                    raise ValueError(f"{field}: a baseline comparison judges the canary itself (maxDifference, "
                                     f"alpha, minSamples); remove the condition")
        return self


class AnalysisTemplate(_Strict):
    """Named metrics with declared arguments, referenced by ``templateName``."""

    name: str = Field(pattern=NAME_PATTERN, max_length=63)
    args: list[Arg] = Field(default_factory=list, max_length=MAX_ARGS)
    metrics: list[Metric] = Field(min_length=1, max_length=MAX_METRICS)

    @model_validator(mode="after")
    def _consistent(self) -> AnalysisTemplate:
        _unique((arg.name for arg in self.args), "args", "arg")
        _unique((metric.name for metric in self.metrics), "metrics", "metric")
        declared = {arg.name for arg in self.args}
        for index, metric in enumerate(self.metrics):
            for path, text in metric.provider.texts().items():
                for name in arg_names(text):
                    if name not in declared:
                        raise ValueError(
                            f"metrics.{index}.provider.{path}: {{{{args.{name}}}}} is not an arg of template "
                            f"{self.name!r}; declare it in args")
        return self

    def defaults(self) -> dict[str, str]:
        """The declared args that have a default value."""
        return {arg.name: arg.value for arg in self.args if arg.value is not None}


def _unique(names: Iterable[str], field: str, what: str) -> None:
    seen: set[str] = set()
    for index, name in enumerate(names):
        if name in seen:
            raise ValueError(f"{field}.{index}.name: {what} {name!r} is given twice")
        seen.add(name)


class TemplateRef(_Strict):
    """A reference to a template of the job's ``analysis.templates``."""

    template_name: str = Field(alias="templateName", pattern=NAME_PATTERN, max_length=63)


class AnalysisRef(_Strict):
    """Which templates to run, and the values of their args."""

    templates: list[TemplateRef] = Field(min_length=1, max_length=MAX_TEMPLATES)
    args: list[ArgValue] = Field(default_factory=list, max_length=MAX_ARGS)

    @model_validator(mode="after")
    def _unique_args(self) -> AnalysisRef:
        _unique((arg.name for arg in self.args), "args", "arg")
        _unique((ref.template_name for ref in self.templates), "templates", "template")
        return self

    def values(self) -> dict[str, str]:
        """The given arg values by name."""
        return {arg.name: arg.value for arg in self.args}


class BackgroundAnalysis(AnalysisRef):
    """Analysis across the release, from step ``startingStep`` (0-based, as in Argo Rollouts) on."""

    starting_step: int = Field(default=0, alias="startingStep", ge=0, le=100)


class AnalysisStep(_Strict):
    """A step that runs the referenced templates and waits for their verdict."""

    analysis: AnalysisRef


class Analysis(_Strict):
    """A job's analysis: its templates, and the optional background analysis over them."""

    templates: list[AnalysisTemplate] = Field(default_factory=list, max_length=MAX_TEMPLATES)
    background: BackgroundAnalysis | None = None

    @model_validator(mode="after")
    def _refs(self) -> Analysis:
        _unique((template.name for template in self.templates), "templates", "template")
        if self.background is not None:
            check_ref(self, self.background, "background")
        return self

    def template(self, name: str) -> AnalysisTemplate:
        """The template named ``name`` (KeyError if none)."""
        for template in self.templates:
            if template.name == name:
                return template
        raise KeyError(name)


def check_ref(analysis: Analysis | None, ref: AnalysisRef, path: str) -> None:
    """Refuse a reference that cannot run, naming the field under ``path`` (e.g. ``steps.2.analysis``).

    Each template must exist, each of its args needs a value (given here or its default), and
    each given arg must be taken by one of the templates: a typo in an arg name is a mistake,
    not a value silently ignored.
    """
    known = [template.name for template in analysis.templates] if analysis is not None else []
    values = ref.values()
    taken: set[str] = set()
    for index, item in enumerate(ref.templates):
        if item.template_name not in known:
            choices = ", ".join(known) if known else "none (define them in analysis.templates)"
            raise ValueError(f"{path}.templates.{index}.templateName: no template named "
                             f"{item.template_name!r}; templates: {choices}")
        assert analysis is not None
        template = analysis.template(item.template_name)
        for arg in template.args:
            taken.add(arg.name)
            if arg.name not in values and arg.value is None:
                raise ValueError(f"{path}.args: template {template.name!r} needs a value for arg {arg.name!r}")
    for index, given in enumerate(ref.args):
        if given.name not in taken:
            raise ValueError(f"{path}.args.{index}.name: no referenced template takes an arg {given.name!r}")


def check_step_refs(analysis: Analysis | None, steps: Sequence[object]) -> None:
    """Check every ``analysis`` step of ``steps`` against ``analysis`` (for the job spec's validator)."""
    for index, step in enumerate(steps):
        if isinstance(step, AnalysisStep):
            path = f"steps.{index}.analysis"
            check_ref(analysis, step.analysis, path)
            assert analysis is not None
            for ref in step.analysis.templates:
                for metric in analysis.template(ref.template_name).metrics:
                    if metric.count is None:
                        # The step waits for a verdict; a metric measured until the step ends never gives one.
                        raise ValueError(
                            f"{path}: metric {metric.name!r} of template {ref.template_name!r} has no count; "
                            "an analysis step ends when every metric has its count of measurements (metrics "
                            "without a count belong in analysis.background)")
    if analysis is not None and analysis.background is not None and analysis.background.starting_step >= len(steps):
        raise ValueError(f"analysis.background.startingStep: {analysis.background.starting_step} is past the "
                         f"last step (steps are numbered from 0 to {len(steps) - 1})")


def render(template: AnalysisTemplate, args: Sequence[ArgValue] | Mapping[str, str]) -> dict[str, str]:
    """Each metric's query (or URL) with ``{{args.x}}`` replaced: given values win over defaults."""
    values = _values(template, args)
    rendered: dict[str, str] = {}
    for metric in template.metrics:
        provider = metric.provider.rendered(values)
        rendered[metric.name] = provider.summary()
    return rendered


def rendered_metrics(template: AnalysisTemplate, args: Sequence[ArgValue] | Mapping[str, str]) -> list[Metric]:
    """The template's metrics with every provider field rendered, ready for a ``MeasureRequest``."""
    values = _values(template, args)
    return [metric.model_copy(update={"provider": metric.provider.rendered(values)}) for metric in template.metrics]


def _values(template: AnalysisTemplate, args: Sequence[ArgValue] | Mapping[str, str]) -> dict[str, str]:
    given = dict(args) if isinstance(args, Mapping) else {arg.name: arg.value for arg in args}
    return {**template.defaults(), **given}


class MeasureRequest(_Strict):
    """One measurement of one metric: the ``measure_metric`` activity's input.

    ``provider`` is already rendered (no ``{{args.x}}`` left); ``default_prometheus_address``
    is the worker's configured Prometheus, used when the query names none.
    """

    metric: str = Field(max_length=63)
    provider: Provider
    success_condition: str | None = Field(default=None, alias="successCondition")
    failure_condition: str | None = Field(default=None, alias="failureCondition")
    default_prometheus_address: str | None = Field(default=None, alias="defaultPrometheusAddress")

    @classmethod
    def of(cls, metric: Metric, default_prometheus_address: str | None = None) -> MeasureRequest:
        """The request for one measurement of an already rendered ``metric``."""
        return cls(metric=metric.name, provider=metric.provider, success_condition=metric.success_condition,
                   failure_condition=metric.failure_condition,
                   default_prometheus_address=default_prometheus_address)
