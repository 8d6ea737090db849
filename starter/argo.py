"""``canaryctl convert``: an Argo Rollouts ``Rollout`` (and its AnalysisTemplates) as a job.

A canary strategy becomes steps; a blueGreen strategy becomes ``mode: blueGreen`` with the same
field names.

Argo users move over with one command, so the job keeps what has a counterpart (canary steps,
the workload, the progress deadline, analysis written in the same vocabulary) and every field
that has none becomes a note, never a silent drop. Pure data in, data out: no cluster, no
Temporal; the caller validates the result as ``apply`` would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]

# Canary fields whose job is done another way here (or not at all), and what to tell the user.
CANARY_NOTES = {
    "canaryService": "traffic goes through the workload's own Service (or `traffic` routers); canaryService dropped",
    "stableService": "traffic goes through the workload's own Service (or `traffic` routers); stableService dropped",
    "trafficRouting": "trafficRouting has no direct counterpart: configure `traffic` (a router) by hand",
    "maxSurge": "maxSurge has no counterpart: the canary is a Deployment of its own, sized by the steps",
    "maxUnavailable": "maxUnavailable has no counterpart: the stable side keeps its pods until promotion",
    "antiAffinity": "antiAffinity has no counterpart",
    "canaryMetadata": "canaryMetadata has no counterpart (the job labels canary pods itself)",
    "stableMetadata": "stableMetadata has no counterpart",
    "scaleDownDelaySeconds": "scaleDownDelaySeconds has no counterpart",
    "abortScaleDownDelaySeconds": "abortScaleDownDelaySeconds has no counterpart",
    "dynamicStableScale": "dynamicStableScale has no counterpart",
    "pingPong": "pingPong has no counterpart",
    "minPodsPerReplicaSet": "minPodsPerReplicaSet has no counterpart",
}
# strategy.blueGreen fields that read the same in a job's blueGreen section.
BLUE_GREEN_FIELDS = ("activeService", "previewService", "autoPromotionEnabled", "autoPromotionSeconds",
                     "scaleDownDelaySeconds")
METRIC_FIELDS = ("name", "interval", "count", "initialDelay", "failureLimit", "inconclusiveLimit",
                 "consecutiveErrorLimit", "successCondition", "failureCondition")
PROVIDER_FIELDS = {"prometheus": ("address", "query"),
                   "web": ("url", "method", "headers", "body", "jsonPath", "timeoutSeconds")}


@dataclass
class Conversion:
    """The job, and one note per Argo field that did not carry over."""

    job: Obj
    notes: list[str] = field(default_factory=list)


class ConvertError(ValueError):
    """The input holds no Rollout this can read."""


def convert(documents: list[Any], *, namespace: str | None = None) -> Conversion:
    """The job for the (single) Rollout among ``documents``; AnalysisTemplates beside it are carried over."""
    rollouts = [d for d in documents if isinstance(d, dict) and d.get("kind") == "Rollout"]
    if len(rollouts) != 1:
        raise ConvertError(f"expected one Rollout (kind: Rollout), found {len(rollouts)}")
    templates = {str(d.get("metadata", {}).get("name")): d for d in documents
                 if isinstance(d, dict) and d.get("kind") in ("AnalysisTemplate", "ClusterAnalysisTemplate")}
    others = [d.get("kind") for d in documents if isinstance(d, dict)
              and d.get("kind") not in ("Rollout", "AnalysisTemplate", "ClusterAnalysisTemplate")]
    rollout = rollouts[0]
    metadata, spec = rollout.get("metadata") or {}, rollout.get("spec") or {}
    notes = [f"{kind}: not converted (only Rollout and AnalysisTemplate are)" for kind in others]
    job: Obj = {"name": metadata.get("name"), "namespace": namespace or metadata.get("namespace") or "default"}
    job["workload"] = {"name": _workload(metadata, spec, notes)}
    strategy = spec.get("strategy") or {}
    if isinstance(strategy.get("blueGreen"), dict):
        _blue_green(job, spec, strategy["blueGreen"], templates, notes)
        return Conversion(job, notes)
    canary = strategy.get("canary") or {}
    steps, used = _steps(canary.get("steps") or [], templates, notes)
    job["steps"] = steps or [{"setWeight": 100}]
    if not steps:
        notes.append("strategy.canary.steps: none given; one `setWeight: 100` step stands for Argo's "
                     "roll out at once")
    if "progressDeadlineSeconds" in spec:
        job["progressDeadline"] = f"{int(spec['progressDeadlineSeconds'])}s"
    if spec.get("progressDeadlineAbort") is False:
        notes.append("spec.progressDeadlineAbort: false: a canary past its deadline is always rolled back here")
    _analysis(job, canary.get("analysis"), templates, used, notes)
    notes.extend(_unmapped(spec, canary))
    return Conversion(job, notes)


def _blue_green(job: Obj, spec: Obj, argo: Obj, templates: dict[str, Obj], notes: list[str]) -> None:
    """``strategy.blueGreen``: the same field names here (mode: blueGreen); the rest become notes."""
    job["mode"] = "blueGreen"
    blue_green: Obj = {key: argo[key] for key in BLUE_GREEN_FIELDS if key in argo}
    if blue_green.get("autoPromotionEnabled") is False and "autoPromotionSeconds" in blue_green:
        del blue_green["autoPromotionSeconds"]
        notes.append("strategy.blueGreen.autoPromotionSeconds: ignored by Argo with autoPromotionEnabled: false, "
                     "dropped (the job refuses a field that does nothing)")
    used: set[str] = set()
    for key in ("prePromotionAnalysis", "postPromotionAnalysis"):
        if isinstance(argo.get(key), dict):
            refs = _refs(argo[key], templates, f"strategy.blueGreen.{key}", notes)
            if refs is not None:
                used.update(t["templateName"] for t in refs["templates"])
                blue_green[key] = refs
    job["blueGreen"] = blue_green
    if "progressDeadlineSeconds" in spec:
        job["progressDeadline"] = f"{int(spec['progressDeadlineSeconds'])}s"
    if used:
        job["analysis"] = {"templates": [_template(templates[name], notes) for name in sorted(used)]}
    for key in sorted(set(argo) - set(BLUE_GREEN_FIELDS) - {"prePromotionAnalysis", "postPromotionAnalysis"}):
        notes.append(f"strategy.blueGreen.{key}: no counterpart, dropped")
    for key in ("revisionHistoryLimit", "paused", "restartAt", "rollbackWindow", "minReadySeconds"):
        if key in spec:
            notes.append(f"spec.{key}: no counterpart, dropped")


def _unmapped(spec: Obj, canary: Obj) -> list[str]:
    """A note for each Rollout field the job has no counterpart for."""
    notes = []
    for key in sorted(canary):
        if key in CANARY_NOTES:
            notes.append(f"strategy.canary.{key}: {CANARY_NOTES[key]}")
        elif key not in ("steps", "analysis"):
            notes.append(f"strategy.canary.{key}: no counterpart, dropped")
    for key in ("revisionHistoryLimit", "paused", "restartAt", "rollbackWindow", "minReadySeconds"):
        if key in spec:
            notes.append(f"spec.{key}: no counterpart, dropped")
    return notes


def _analysis(job: Obj, background: Any, templates: dict[str, Obj], used: set[str], notes: list[str]) -> None:
    """The background analysis (``strategy.canary.analysis``) and every template the job refers to."""
    if isinstance(background, dict):
        refs = _refs(background, templates, "strategy.canary.analysis", notes)
        if refs is not None:
            used.update(t["templateName"] for t in refs["templates"])
            if "startingStep" in background:
                refs["startingStep"] = background["startingStep"]
            job["analysis"] = {"background": refs}
    if used:
        job.setdefault("analysis", {})["templates"] = [_template(templates[name], notes) for name in sorted(used)]


def _workload(metadata: Obj, spec: Obj, notes: list[str]) -> str:
    ref = spec.get("workloadRef")
    if isinstance(ref, dict):
        if ref.get("kind", "Deployment") != "Deployment":
            raise ConvertError(f"spec.workloadRef: kind {ref.get('kind')!r}: only a Deployment can be delivered")
        if "scaleDown" in ref:
            notes.append("spec.workloadRef.scaleDown: the job keeps the Deployment (paused) as the stable side")
        return str(ref.get("name"))
    if "template" in spec:
        name = str(metadata.get("name"))
        notes.append(f"spec.template: the job delivers an existing Deployment; create Deployment {name} with this "
                     "selector, replicas and pod template (or use workloadRef), then apply the job")
        return name
    raise ConvertError("the Rollout has neither spec.workloadRef nor spec.template")


# Steps with a counterpart the conversion still cannot keep. setHeaderRoute has the same shape
# here but needs a router, and trafficRouting is not converted.
_STEP_NOTES = {"setHeaderRoute": "needs a router in `traffic`; step dropped (once `traffic` names one, add it "
                                 "back as it is: the fields are the same)"}


def _steps(argo_steps: list[Any], templates: dict[str, Obj], notes: list[str]) -> tuple[list[Obj], set[str]]:
    steps: list[Obj] = []
    used: set[str] = set()
    for index, step in enumerate(argo_steps):
        where = f"strategy.canary.steps.{index}"
        if not isinstance(step, dict) or len(step) != 1:
            notes.append(f"{where}: not a single-key step, dropped")
            continue
        (kind, value), = step.items()
        if kind == "setWeight":
            steps.append({"setWeight": value})
        elif kind == "pause":
            duration = (value or {}).get("duration") if isinstance(value, dict) else None
            steps.append({"pause": {} if duration is None else {"duration": _duration(duration)}})
        elif kind == "setCanaryScale" and isinstance(value, dict):
            if "replicas" in value:
                steps.append({"setCanaryScale": {"replicas": value["replicas"]}})
            elif "weight" in value:
                steps.append({"setCanaryScale": {"percent": value["weight"]}})
            else:
                notes.append(f"{where}.setCanaryScale.matchTrafficWeight: the canary always matches the weight "
                             "after a setWeight here; step dropped")
        elif kind == "analysis" and isinstance(value, dict):
            refs = _refs(value, templates, f"{where}.analysis", notes)
            if refs is not None:
                used.update(t["templateName"] for t in refs["templates"])
                steps.append({"analysis": refs})
        else:
            notes.append(f"{where}.{kind}: {_STEP_NOTES.get(kind, 'no counterpart, step dropped')}")
    return steps, used


def _refs(value: Obj, templates: dict[str, Obj], where: str, notes: list[str]) -> Obj | None:
    names = [t.get("templateName") for t in value.get("templates") or [] if isinstance(t, dict)]
    missing = [n for n in names if n not in templates]
    if not names or missing:
        notes.append(f"{where}: AnalysisTemplate {', '.join(map(str, missing)) or '(none)'} not in the file; "
                     "analysis dropped (put the templates in the same file, separated by ---)")
        return None
    refs: Obj = {"templates": [{"templateName": n} for n in names]}
    args = []
    for arg in value.get("args") or []:
        if isinstance(arg, dict) and "value" in arg:
            args.append({"name": arg["name"], "value": str(arg["value"])})
        else:
            notes.append(f"{where}.args: {arg.get('name') if isinstance(arg, dict) else arg}: valueFrom has no "
                         "counterpart; give the value")
    if args:
        refs["args"] = args
    return refs


def _template(document: Obj, notes: list[str]) -> Obj:
    name = str((document.get("metadata") or {}).get("name"))
    spec = document.get("spec") or {}
    template: Obj = {"name": name, "metrics": []}
    if spec.get("args"):
        template["args"] = [{k: v for k, v in arg.items() if k in ("name", "value")} for arg in spec["args"]]
    for metric in spec.get("metrics") or []:
        converted = {key: metric[key] for key in METRIC_FIELDS if key in metric}
        for key in ("interval", "initialDelay"):
            if key in converted:
                converted[key] = _duration(converted[key])
        where = f"AnalysisTemplate {name}: metric {metric.get('name')}"
        for key in sorted(set(metric) - set(METRIC_FIELDS) - {"provider"}):
            notes.append(f"{where}: {key} has no counterpart, dropped")
        provider = metric.get("provider") or {}
        kinds = [k for k in provider if k in PROVIDER_FIELDS]
        if not kinds:
            notes.append(f"{where}: provider {', '.join(provider) or '(none)'} has no counterpart; metric dropped")
            continue
        kind = kinds[0]
        converted["provider"] = {kind: {k: v for k, v in provider[kind].items() if k in PROVIDER_FIELDS[kind]}}
        for key in sorted(set(provider[kind]) - set(PROVIDER_FIELDS[kind])):
            notes.append(f"{where}: provider.{kind}.{key} has no counterpart, dropped")
        if any(k in converted for k in ("successCondition", "failureCondition")):
            notes.append(f"{where}: conditions are CEL here (Argo: expr); `result[0] >= 0.95` reads the same, "
                         "check the others")
        template["metrics"].append(converted)
    if not template["metrics"]:
        notes.append(f"AnalysisTemplate {name}: no metric could be converted")
    return template


def _duration(value: Any) -> str:
    """Argo's durations: seconds as a number, or ``10s``/``5m``/``1h`` (which read the same here)."""
    if isinstance(value, int | float) or (isinstance(value, str) and value.isdigit()):
        return f"{int(value)}s"
    return str(value)
