"""``canaryctl lint`` and ``convert`` offline (no Temporal, no cluster), and the status verdicts."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from starter.follow import Target, Verdict, judge
from tests.cli.helpers import canaryctl
from workflows.models import JobDetails, JobVersions

ROLLOUTS = Path(__file__).resolve().parent / "rollouts"
NOWHERE = {"TEMPORAL_ADDRESS": "127.0.0.1:1"}  # lint and convert must never need it


def test_lint_reads_every_document_and_names_each_field(tmp_path: Path) -> None:
    (tmp_path / "jobs.yaml").write_text(
        "name: web\nnamespace: shop\nworkload: {name: web}\nsteps: [{setWeight: 25}, {pause: {}}]\n---\n"
        "name: api\nworkload: {name: api}\nsteps: [{setWeight: 120}, {pause: {duration: soon}}]\n---\n"
        "name: Bad_Name\nsteps: [{setWeight: 5}]\n")
    result = canaryctl("lint", "-f", "jobs.yaml", cwd=tmp_path, env=NOWHERE)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "jobs.yaml (document 1): ok: canary job shop/web, 2 steps, Deployment web",
        "jobs.yaml (document 2): steps.0.setWeight: Input should be less than or equal to 100",
        "jobs.yaml (document 2): steps.1.pause.duration: 'soon' is not a duration; use a number with s, m, h "
        "or d, such as 10m",
        "jobs.yaml (document 3): name: String should match pattern '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'",
        "jobs.yaml (document 3): workload: Field required",
    ]
    assert result.stderr == "error: 4 problems in jobs.yaml\n"


def test_lint_passes_a_good_file_and_checks_the_namespace_like_apply(tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text("name: web\nnamespace: shop\nworkload: {name: web}\nsteps: [{setWeight: 5}]\n")
    assert canaryctl("lint", "-f", "job.yaml", cwd=tmp_path, env=NOWHERE).returncode == 0
    other = canaryctl("lint", "-f", "job.yaml", "-n", "prod", cwd=tmp_path, env=NOWHERE)
    assert other.returncode == 1 and "says namespace 'shop' but -n says 'prod'" in other.stdout


def convert(name: str) -> tuple[dict[str, Any], list[str]]:
    result = canaryctl("convert", "-f", str(ROLLOUTS / name), env=NOWHERE)
    assert result.returncode == 0, result.stderr
    notes = [line.removeprefix("note: ") for line in result.stderr.splitlines()]
    return yaml.safe_load(result.stdout), notes


def test_convert_basic_canary_with_its_own_template() -> None:
    job, notes = convert("basic-canary.yaml")
    assert job["workload"] == {"name": "web"}
    assert job["steps"] == [{"setWeight": 20}, {"pause": {}}, {"setWeight": 40}, {"pause": {"duration": "10s"}},
                            {"setWeight": 80}, {"pause": {"duration": "10s"}}]
    assert any(note.startswith("spec.template: the job delivers an existing Deployment") for note in notes)
    assert "spec.revisionHistoryLimit: no counterpart, dropped" in notes


def test_convert_workload_ref_with_analysis() -> None:
    job, notes = convert("workload-ref.yaml")
    assert job["namespace"] == "shop" and job["progressDeadline"] == "120s"
    assert job["steps"][1] == {"analysis": {"templates": [{"templateName": "success-rate"}],
                                            "args": [{"name": "service", "value": "web"}]}}
    assert job["analysis"]["background"]["startingStep"] == 1
    assert [t["name"] for t in job["analysis"]["templates"]] == ["success-rate"]
    assert "strategy.canary.steps.3.experiment: no counterpart, step dropped" in notes
    assert any(note.startswith("strategy.canary.trafficRouting:") for note in notes)
    assert any(note.startswith("strategy.canary.canaryService:") for note in notes)


def test_convert_pauses_and_canary_scale() -> None:
    job, _ = convert("pauses.yaml")
    assert [s["pause"] for s in job["steps"] if "pause" in s] == [{}, {"duration": "45s"}, {"duration": "90s"},
                                                                  {"duration": "1h"}]
    job, notes = convert("set-canary-scale.yaml")
    assert job["steps"][:3] == [{"setCanaryScale": {"replicas": 1}}, {"pause": {"duration": "30s"}},
                                {"setCanaryScale": {"percent": 50}}]
    assert any("matchTrafficWeight" in note for note in notes)
    assert not any("setHeaderRoute" in step for step in job["steps"])
    assert any(note.startswith("strategy.canary.steps.7.setHeaderRoute: needs a router") for note in notes)


def test_convert_refuses_what_is_not_a_rollout(tmp_path: Path) -> None:
    (tmp_path / "d.yaml").write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n")
    result = canaryctl("convert", "-f", "d.yaml", cwd=tmp_path, env=NOWHERE)
    assert result.returncode == 2 and "expected one Rollout" in result.stderr


def details(**fields: Any) -> JobDetails:
    base: dict[str, Any] = {"name": "web", "namespace": "shop", "workload": "web", "mode": "canary",
                            "phase": "healthy", "replicas": 4, "weight": 0, "actual_weight": 0,
                            "canary_replicas": 0, "current_step": None, "steps": [], "last_error": None,
                            "stable": version(1), "canary": None, "rules": {}, "events": []}
    return JobDetails.model_validate({**base, **fields})


def version(revision: int, outcome: str | None = None, reason: str | None = None) -> dict[str, Any]:
    return {"revision": revision, "template_hash": "h", "images": {"app": f"web:{revision}"}, "trigger": "edit",
            "started": datetime(2026, 1, 1, tzinfo=UTC).isoformat(), "outcome": outcome, "reason": reason}


def test_verdicts() -> None:
    assert judge(details(), Target()) == Verdict(0, "shop/web: healthy (revision 1), nothing to deliver")
    running = details(phase="paused", canary=version(2))
    assert judge(running, Target()) == Target(release=2)
    # An operation's release not started yet: keep waiting, even though the job looks healthy.
    assert judge(details(), Target(after=1)) == Target(after=1)
    failed = details(phase="failed", last_release=version(2, "failed", "CrashLoopBackOff"))
    assert judge(failed, Target(release=2)) == Verdict(1, "shop/web: release 2 failed: CrashLoopBackOff")
    assert judge(failed, Target()) == Verdict(1, "shop/web: release 2 failed: CrashLoopBackOff")
    promoted = details(stable=version(2), last_release=version(2, "promoted"))
    assert judge(promoted, Target(after=1)) == Verdict(0, "shop/web: release 2 promoted")
    superseded = details(phase="progressing", canary=version(3), last_release=version(2, "superseded"))
    assert judge(superseded, Target(release=2)) == Target(release=3)
    assert judge(details(phase="deleted"), Target()).status == 1  # type: ignore[union-attr]


def test_a_followed_release_that_is_terminated_is_named_with_its_reason() -> None:
    terminated = details(phase="terminated", last_error="error rate",
                         last_release=version(2, "terminated", "error rate"))
    assert judge(terminated, Target(release=2)) == Verdict(1, "shop/web: release 2 terminated: error rate")
    # Not following any release: the job's own state says it.
    assert judge(terminated, Target()).status == 1  # type: ignore[union-attr]
    # Terminated with the release nowhere to be found: still a failure, never a wait to the timeout.
    lost = details(phase="terminated", last_error="error rate")
    assert judge(lost, Target(release=2), JobVersions(stable=None, canary=None, history=[])).status == 1  # type: ignore[union-attr]


def test_convert_blue_green_keeps_argo_field_names(tmp_path: Path) -> None:
    job, notes = convert("blue-green.yaml")
    assert job["mode"] == "blueGreen" and "steps" not in job
    assert job["blueGreen"] == {
        "activeService": "web", "previewService": "web-preview", "autoPromotionEnabled": False,
        "scaleDownDelaySeconds": 120, "prePromotionAnalysis": {
            "templates": [{"templateName": "success-rate"}],
            "args": [{"name": "service-name", "value": "web-preview"}]}}
    assert [t["name"] for t in job["analysis"]["templates"]] == ["success-rate"]
    assert any(note.startswith("strategy.blueGreen.autoPromotionSeconds: ignored by Argo") for note in notes)
    assert "strategy.blueGreen.previewReplicaCount: no counterpart, dropped" in notes
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    linted = canaryctl("lint", "-f", "job.yaml", cwd=tmp_path, env=NOWHERE)
    assert linted.returncode == 0, linted.stdout
    assert linted.stdout == "job.yaml: ok: canary job shop/web, blue-green via Service web, Deployment web\n"
