"""Text views with fixed data and a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from starter.client import JobSummary
from starter.render import age, duration, image_pairs, images, render_details, render_jobs, render_versions, table
from workflows.models import (
    Event,
    JobDetails,
    JobVersions,
    Outcome,
    Phase,
    StepState,
    StepStatus,
    Trigger,
    Version,
)

NOW = datetime(2025, 5, 1, 12, 0, 0, tzinfo=UTC)


def version(revision: int, image: str, **extra: object) -> Version:
    return Version.model_validate({
        "revision": revision, "template_hash": f"hash{revision}abcdefgh", "images": {"app": image},
        "trigger": Trigger.ATTACH if revision == 1 else Trigger.UPDATE_VERSION,
        "started": NOW - timedelta(hours=3 - revision), **extra})


def details(**extra: object) -> JobDetails:
    steps = [
        StepState(index=0, description="setWeight 20%", status=StepStatus.SUCCEEDED),
        StepState(index=1, description="pause 10m", status=StepStatus.RUNNING),
        StepState(index=2, description="setWeight 50%", status=StepStatus.PENDING),
    ]
    return JobDetails.model_validate({
        "name": "web", "namespace": "shop", "workload": "web-deploy", "mode": "canary",
        "phase": Phase.PAUSED, "replicas": 5, "weight": 20, "actual_weight": 20, "canary_replicas": 1,
        "current_step": 1,
        "steps": steps, "pause_remaining": "3595s", "last_error": None,
        "stable": version(1, "nginx:1.25"), "canary": version(2, "nginx:1.26"),
        "rules": {}, "events": [Event(at=NOW, kind="started", message="release 2", actor="alice")],
        **extra})


def test_details_text() -> None:
    text = render_details(details(), NOW)
    assert "Name:       web" in text
    assert "Namespace:  shop" in text
    assert "Phase:      paused" in text
    assert "Mode:       canary" in text
    assert "Workload:   Deployment/web-deploy" in text
    assert "Weight:     20%, 1 of 5 pods canary" in text
    assert "Weight:     25% (actual 20%), 1 of 5 pods canary" in render_details(details(weight=25), NOW)
    assert "Pause left: 59m55s" in text
    assert "Router:" not in text  # replica ratio: the pods are the weight
    routed = render_details(details(routing="istio", routes=[{"route": "primary", "stable": 90, "canary": 10}],
                                    weight=10, actual_weight=10), NOW)
    assert "Weight:     10%, 1 of 5 pods canary" in routed
    assert "Router:     istio (stable/canary: primary 90/10)" in routed
    shrunk = render_details(details(routing="istio", routes=[{"route": "primary", "stable": 40, "canary": 60}],
                                    weight=60, actual_weight=60, canary_replicas=3, stable_replicas=2), NOW)
    assert "Pods:       2 stable, 3 canary" in shrunk.splitlines()  # dynamicStableScale: stable sized to 40 %
    assert "Pods:" not in text
    assert "Header:" not in routed
    ab = render_details(details(routing="nginx", routes=[{"route": "web-canary", "stable": 100, "canary": 0}],
                                header_routes=[{"name": "beta", "match": [
                                    {"headerName": "x-canary", "headerValue": {"prefix": "yes"}}]}]), NOW)
    assert "Header:     setHeaderRoute beta: x-canary starts with yes" in ab.splitlines()
    assert "Last error: -" in text
    lines = text.splitlines()
    assert "    [x] 1. setWeight 20%" in lines
    assert "  > [>] 2. pause 10m  (59m55s left)  <- current" in lines
    assert "    [ ] 3. setWeight 50%" in lines
    stable = next(line for line in lines if line.strip().startswith("stable"))
    assert "rev 1" in stable and "nginx:1.25" in stable and "(2h ago)" in stable
    canary = next(line for line in lines if line.strip().startswith("canary"))
    assert "rev 2" in canary and "nginx:1.26" in canary and "(1h ago)" in canary
    assert "started: release 2 (by alice)" in text
    text.encode("ascii")


def test_details_color_highlights_current_step_only() -> None:
    text = render_details(details(), NOW, color=True)
    highlighted = [line for line in text.splitlines() if "\x1b[1m" in line]
    assert len(highlighted) == 1 and "pause 10m" in highlighted[0]


def test_details_idle_job_with_error() -> None:
    text = render_details(details(phase=Phase.FAILED, steps=[], current_step=None, pause_remaining=None,
                                  canary=None, last_error="canary pods not ready"), NOW)
    assert "Last error: canary pods not ready" in text
    assert "(no release running)" in text
    assert "Pause left" not in text
    assert "  canary  -" in text.splitlines()


def test_phases_that_wait_for_the_cluster_say_so() -> None:
    missing = render_details(details(phase=Phase.WORKLOAD_MISSING), NOW)
    assert "Phase:      workload-missing (the Deployment is gone; the job waits for it to come back)" in missing
    error = render_details(details(phase=Phase.ERROR, last_error="deployments.apps is forbidden"), NOW)
    assert "Phase:      error (the cluster refuses what the job must do; it retries" in error
    assert "Last error: deployments.apps is forbidden" in error
    assert "Phase:      paused\n" in render_details(details(), NOW)


def test_versions_table() -> None:
    history = [version(1, "nginx:1.25", finished=NOW, outcome=Outcome.PROMOTED),
               version(2, "nginx:1.26", reason="error rate", outcome=Outcome.ROLLED_BACK, finished=NOW)]
    text = render_versions(JobVersions(stable=history[0], canary=version(3, "nginx:1.27"), history=history))
    lines = text.splitlines()
    assert lines[0].split() == ["REVISION", "ROLE", "IMAGES", "HASH", "STARTED", "FINISHED", "OUTCOME",
                                "TRIGGER", "REASON"]
    assert [line.split()[0] for line in lines[1:]] == ["1", "2", "3"]
    assert lines[1].split()[1:3] == ["stable", "nginx:1.25"]
    assert "hash1abcde" in lines[1] and "promoted" in lines[1] and "attach" in lines[1]
    assert lines[2].split()[1] == "nginx:1.26" and lines[2].endswith("error rate")
    assert lines[3].split()[1] == "canary"
    assert render_versions(JobVersions(stable=None, canary=None, history=[])) == "no versions yet"


def test_jobs_table_and_helpers() -> None:
    jobs = [JobSummary(namespace="shop", name="web", workload="web", phase="paused", status="running",
                       started=NOW - timedelta(minutes=5), workflow_id="canary.shop.web")]
    assert render_jobs(jobs, NOW).splitlines() == [
        "NAMESPACE  NAME  WORKLOAD  PHASE   STATUS   AGE",
        "shop       web   web       paused  running  5m",
    ]
    assert render_jobs([], NOW) == "no canary jobs"
    waiting = jobs[0].model_copy(update={"phase": "workload-missing"})
    assert render_jobs([waiting], NOW).splitlines()[1].split()[3] == "workload-missing"
    assert age(NOW - timedelta(days=2, hours=1), NOW) == "2d"
    assert age(None, NOW) == "-"
    assert [duration(timedelta(seconds=s)) for s in (0, 59, 3600, 93784)] == ["0s", "59s", "1h", "1d2h3m4s"]
    assert table(["A", "B"], [["long value", "x"]]).splitlines()[1] == "long value  x"
    two = version(1, "x", images={"sidecar": "envoy:1", "app": "web:2"})
    assert images(two) == "app=web:2,sidecar=envoy:1"  # one table cell
    assert image_pairs(two.images) == "app=web:2, sidecar=envoy:1"


def test_blue_green_details_say_what_each_service_serves() -> None:
    plain = render_details(details(), NOW)
    assert "Active:" not in plain and "Preview:" not in plain
    previewing = render_details(details(mode="blueGreen", steps=[], current_step=None, blue_green={
        "active_service": "web", "active_revision": 1, "preview_service": "web-preview", "preview_revision": 2,
        "stage": "preview"}), NOW)
    assert "Mode:       blueGreen" in previewing
    assert "Active:     Service/web -> revision 1" in previewing
    assert "Preview:    Service/web-preview -> revision 2" in previewing
    switched = render_details(details(mode="blueGreen", steps=[], current_step=None, blue_green={
        "active_service": "web", "active_revision": 2, "preview_service": None, "stage": "switched",
        "scale_down_at": NOW + timedelta(seconds=30)}), NOW)
    assert "Active:     Service/web -> revision 2 (green; the previous revision stays up 30s more)" in switched
    assert "Preview:" not in switched
