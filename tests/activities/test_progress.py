"""What a fused activity's heartbeats carry to its next attempt, and what they cost the server.

Run with the SDK's ActivityEnvironment: its ``on_heartbeat`` is what the worker would send.
"""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.testing import ActivityEnvironment

from activities import progress
from activities.progress import tracked
from workflows.models import HoldStableResult, WorkloadSnapshot

EDIT = WorkloadSnapshot(template={"spec": {"containers": [{"name": "app", "image": "web:9"}]}},
                        template_hash="abc", images={"app": "web:9"}, replicas=3, resource_version="7")


def _beats() -> tuple[ActivityEnvironment, list[dict[str, Any]]]:
    env, beats = ActivityEnvironment(), []
    env.on_heartbeat = lambda *details: beats.append(details[0])
    return env, beats


def test_a_step_that_ends_quickly_sends_no_heartbeat() -> None:
    env, beats = _beats()

    def step() -> None:
        with tracked() as p:
            for stage in ("prepare", "canary", "ready", "stable"):
                p.mark(stage)

    env.run(step)
    assert beats == []


def test_an_edit_set_aside_goes_out_at_once() -> None:
    """A retry could not find it again: the Deployment no longer holds it."""
    env, beats = _beats()

    def hold() -> None:
        with tracked() as p:
            p.keep(HoldStableResult(displaced=EDIT, generation=4))
            p.mark("held")

    env.run(hold)
    assert len(beats) == 1 and beats[0]["done"] == ["held"]
    assert beats[0]["displaced"]["template_hash"] == "abc"


def test_a_failed_attempt_hands_its_stages_to_the_next() -> None:
    env, beats = _beats()

    def fails() -> None:
        with tracked() as p:
            p.mark("prepare")
            p.mark("canary")
            raise RuntimeError("the canary is not Ready yet")

    with pytest.raises(RuntimeError):
        env.run(fails)
    assert beats[-1]["done"] == ["canary", "prepare"]


def test_a_long_step_heartbeats_after_the_quiet_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "QUIET_SECONDS", 0.0)
    env, beats = _beats()

    def step() -> None:
        with tracked() as p:
            progress.heartbeat("waiting for 3 canary pods Ready")
            p.mark("ready")

    env.run(step)
    assert [b["waiting"] for b in beats] == ["waiting for 3 canary pods Ready", None]
    assert beats[-1]["done"] == ["ready"]
