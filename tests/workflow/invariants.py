"""Release-safety invariants of a canary job, as pure checks over what the job and the cluster say.

Each ``check_*`` function takes the job's ``details``/``versions`` query answers, the fake
cluster's state and the test's own ledger of what it asked for, and returns violations as
plain sentences (empty: the invariant holds). They do no I/O, so they can be read (and
unit-tested) apart from the state machine that drives the workflow. The numbering follows
the release-safety issue; I5 is about the real cluster and lives in the e2e tests.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from activities.templates import template_hash
from tests.workflow.fake_cluster import FakeCluster
from workflows.models import Event, JobDetails, JobVersions, Outcome, Phase

# Phases in which nothing moves by itself: what the job reports must match the cluster.
RESTING = frozenset({Phase.HEALTHY, Phase.PAUSED, Phase.FAILED, Phase.TERMINATED})
_RELEASE = re.compile(r"^revision (\d+) ")
_CONTINUED = re.compile(r"^step (\d+) continued")


@dataclass
class Ledger:
    """What the test did to the job, as only the test can know it."""

    rules: int = 0
    # Accepted `continue` bursts, by the gate (release revision, 1-based step) waiting when sent.
    continues: Counter[tuple[int, int]] = field(default_factory=Counter)
    # Accepted bursts that named another release or step than the one waiting (refused, once fixed).
    stale_continues: Counter[tuple[int, int]] = field(default_factory=Counter)
    # Every version the test asked for (edit, update-version, rollback, re-create): (rule, template hash).
    requested: list[tuple[int, str]] = field(default_factory=list)
    terminated_at: int | None = None  # rule number of the last accepted `terminate`
    deleted: bool = False  # a `delete` was accepted: the workflow may (must) end
    stuck: list[str] = field(default_factory=list)  # calls the workflow never answered
    events: list[Event] = field(default_factory=list)  # every job event seen, merged across queries
    lost_events: bool = False  # more events happened between two looks than `details` shows


def merge_events(known: list[Event], recent: list[Event]) -> tuple[list[Event], bool]:
    """Append the events of ``recent`` (the job's newest) that ``known`` lacks.

    ``details`` shows only the newest events, so the overlap between what was seen before
    and what is shown now is found by matching ``known``'s tail against ``recent``'s head.
    Returns the merged list and whether events were lost in between.
    """
    if not known:
        return list(recent), False
    for overlap in range(min(len(known), len(recent)), 0, -1):
        if known[-overlap:] == recent[:overlap]:
            return known + recent[overlap:], False
    return known + recent, bool(recent)


def _promoted_hashes(versions: JobVersions) -> set[str]:
    found = {v.template_hash for v in versions.history if v.outcome == Outcome.PROMOTED}
    if versions.stable is not None:
        found.add(versions.stable.template_hash)
    return found


def check_stable_pods(details: JobDetails, versions: JobVersions, cluster: FakeCluster, ledger: Ledger,
                      *, at_rest: bool) -> list[str]:
    """I1: a template reaches the Deployment's own pods only through a promotion the job finishes.

    Allowed in the log: what ran before the job held the Deployment (or after it let go:
    owner None), templates the job reports as promoted, a promotion under way for the
    current canary, and a promotion that failed, which the job reports and undoes. At rest
    a held Deployment is paused and its pods run the job's stable template.
    """
    problems: list[str] = []
    promoted = _promoted_hashes(versions)
    failed = {v.template_hash for v in versions.history if v.outcome == Outcome.FAILED}
    canary = versions.canary.template_hash if versions.canary is not None else None
    for entry in cluster.stable_log:
        if entry.owner is None or entry.template_hash in promoted:
            continue
        promoting = entry.why.startswith("promotion")
        if promoting and entry.template_hash == canary and details.phase == Phase.PROMOTING:
            continue  # on its way; judged when the promotion ends
        if promoting and entry.template_hash in failed:
            continue  # a failed promotion: the job must have said so and restored the stable pods (below)
        problems.append(f"I1: {entry.images} reached the Deployment's own pods at rule {entry.step} "
                        f"({entry.why}) without a finished promotion")
    deployment = cluster.deployment
    if deployment is None or ledger.deleted or deployment.owner is None:
        return problems
    if details.phase != Phase.PROMOTING and not deployment.paused:
        problems.append(f"I1: the job is {details.phase.value} but the Deployment is not paused: "
                        "its next edit would roll out with no canary")
    if at_rest and details.phase in RESTING and details.stable is not None:
        rolling_template = deployment.rolling
        first_rollout = not deployment.pods_template and rolling_template is not None
        running_hash: str | None
        if rolling_template is not None and first_rollout:
            # A Deployment created with a template whose pods never got Ready: they all run that
            # template (nothing older is left to protect), so it is what the job must call stable.
            running_hash, running = template_hash(rolling_template), _image_of(rolling_template)
        else:
            running_hash, running = cluster.stable_hash(), _image_of(deployment.pods_template)
        if running_hash != details.stable.template_hash or (deployment.rolling is not None and not first_rollout):
            rolling = f" (rolling {_image_of(deployment.rolling)})" if deployment.rolling and not first_rollout else ""
            problems.append(f"I1: the job says revision {details.stable.revision} {details.stable.images} is "
                            f"stable but the Deployment's pods run {running}{rolling}")
    return problems


def _image_of(template: dict[str, Any] | None) -> str:
    """The first container's image of a pod template, or a word saying there is none."""
    containers = (template or {}).get("spec", {}).get("containers") or [{}]
    return str(containers[0].get("image", "no pods"))


def check_gates(ledger: Ledger) -> list[str]:
    """I2: each manual gate opens at most once per `continue` that arrived while it waited.

    A burst of identical continues counts once. ``I2-named`` singles out a gate opened by a
    continue that named another release or step: it should have been refused.
    """
    opened: Counter[tuple[int, int]] = Counter()
    release = 0
    for event in ledger.events:
        if event.kind == "release-started" and (match := _RELEASE.match(event.message)):
            release = int(match.group(1))
        elif event.kind == "continued" and (match := _CONTINUED.match(event.message)):
            opened[(release, int(match.group(1)))] += 1
    problems: list[str] = []
    for (release, step), count in sorted(opened.items()):
        sent, stale = ledger.continues[(release, step)], ledger.stale_continues[(release, step)]
        if count > sent + stale:
            problems.append(f"I2: step {step} of revision {release} was continued {count} time(s), but the "
                            f"test continued it {sent} time(s) while it waited")
        elif count > sent:
            problems.append(f"I2-named: step {step} of revision {release} was opened by a continue that "
                            "named another release or step")
    return problems


def check_alive(status: str, details: JobDetails | None, ledger: Ledger) -> list[str]:
    """I3: only `delete` ends the workflow; any failure is a job state with a reason."""
    problems: list[str] = []
    if not ledger.deleted and status != "RUNNING":
        problems.append(f"I3: the workflow is {status} though nobody deleted the job")
    if details is not None and details.phase == Phase.FAILED and not details.last_error:
        problems.append("I3: the job failed without saying why")
    return problems


def check_reported_matches_cluster(details: JobDetails, cluster: FakeCluster, ledger: Ledger) -> list[str]:
    """I4: at rest, phase, stable version, canary size and weight are what the cluster runs."""
    deployment = cluster.deployment
    if ledger.deleted or deployment is None or deployment.owner is None or details.phase not in RESTING:
        return []
    problems: list[str] = []
    canary = cluster.canary
    running = canary.replicas if canary is not None else 0
    if details.canary_replicas != running:
        problems.append(f"I4: the job reports {details.canary_replicas} canary pods, the cluster runs {running}")
    if details.phase == Phase.PAUSED:
        if details.canary is None or canary is None or canary.template_hash != details.canary.template_hash:
            problems.append("I4: the job is paused on a canary the cluster does not run")
        if deployment.replicas + running != details.replicas:
            problems.append(f"I4: {deployment.replicas} stable + {running} canary pods, the job's size is "
                            f"{details.replicas}")
    else:
        if details.weight or details.actual_weight or details.canary is not None:
            problems.append(f"I4: the job is {details.phase.value} yet reports weight {details.weight} and "
                            f"canary {details.canary and details.canary.revision}")
        if deployment.replicas != details.replicas:
            problems.append(f"I4: the Deployment runs {deployment.replicas} replicas, the job says "
                            f"{details.replicas}")
    if details.stable is not None and cluster.stable_hash() == details.stable.template_hash:
        pods = {c["name"]: c["image"] for c in deployment.pods_template["spec"]["containers"]}
        if pods != details.stable.images:
            problems.append(f"I4: stable images reported {details.stable.images}, running {pods}")
    return problems


def check_history(event_types: list[str], ledger: Ledger) -> list[str]:
    """I6: no input fails a workflow task; history grows with the rules, not without bound."""
    problems: list[str] = []
    failed = event_types.count("EVENT_TYPE_WORKFLOW_TASK_FAILED")
    if failed:
        problems.append(f"I6: {failed} workflow task(s) failed")
    bound = 200 + 150 * ledger.rules
    if len(event_types) > bound:
        problems.append(f"I6: {len(event_types)} history events after {ledger.rules} rules (bound {bound})")
    problems.extend(f"I6: {call}" for call in ledger.stuck)
    return problems


def check_newest_wins(details: JobDetails, versions: JobVersions, cluster: FakeCluster,
                      ledger: Ledger) -> list[str]:
    """I7: at rest, the newest requested version is the one delivered; after terminate, nothing starts."""
    deployment = cluster.deployment
    if (ledger.deleted or deployment is None or not deployment.paused or not ledger.requested
            or details.phase not in RESTING):
        return []
    rule, wanted = ledger.requested[-1]
    if ledger.terminated_at is not None and ledger.terminated_at > rule:
        if details.canary is not None:
            return [f"I7: revision {details.canary.revision} {details.canary.images} started by itself after "
                    f"terminate (rule {ledger.terminated_at})"]
        return []
    if details.canary is not None and details.canary.template_hash == wanted:
        return []
    if details.stable is not None and details.stable.template_hash == wanted:
        return []
    latest = versions.history[0] if versions.history else None
    if latest is not None and latest.template_hash == wanted and details.canary is None and latest.outcome in (
            Outcome.FAILED, Outcome.TERMINATED):
        return []
    now = (details.canary or details.stable)
    return [f"I7: the newest request (rule {rule}, template {wanted}) is not what the job delivers: "
            f"{details.phase.value}, running revision {now.revision if now else None} "
            f"{now.images if now else None}"]
