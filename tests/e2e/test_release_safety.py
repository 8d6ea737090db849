"""Release safety end to end: what a release may never do to the serving version, whatever
the timing of promotions, rule changes, operators and edits.

Each test states an invariant a user relies on and checks it on the real cluster; where the
outcome may go two ways (a promotion that may or may not make its deadline) both ways are
checked for the invariant.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from devenv.cluster import READY_DELAY_ANNOTATION
from starter import client as canary
from starter.errors import CanaryError, Conflict
from tests.e2e.conftest import Shop, until
from workflows import names
from workflows.models import (
    JobDetails,
    OperationRequest,
    OperationResult,
    Outcome,
    Phase,
    StepStatus,
    UpdateRulesRequest,
    UpdateVersionRequest,
)

pytestmark = pytest.mark.cluster
STABLE, NEW, NEXT = "registry.local/web:1", "registry.local/web:2", "registry.local/web:3"


def kinds(details: JobDetails, kind: str) -> int:
    return sum(1 for event in details.events if event.kind == kind)


class OwnPodSampler:
    """Lists the Deployment's own (non-canary) pods every ~100 ms in a thread and keeps every
    sighting of ``image``: a version that has not been promoted must never run there."""

    def __init__(self, shop: Shop, image: str) -> None:
        self.shop, self.image = shop, image
        self.sightings: list[str] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for image in self.shop.own_images():
                if image == self.image:
                    self.sightings.append(image)
            self.samples += 1
            self._stop.wait(0.1)

    def __enter__(self) -> OwnPodSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


async def test_a_promotion_that_misses_its_deadline_leaves_the_stable_version_serving(shop: Shop) -> None:
    await shop.attach(steps=[{"setWeight": 25}], progressDeadline="8s")
    # Every new pod takes 6 s to become Ready: one canary pod makes the deadline, rolling four may not.
    shop.set_image(NEW, annotations={READY_DELAY_ANNOTATION: "6s"})
    ended = await shop.wait(lambda d: d.phase == Phase.FAILED or (
        d.phase == Phase.HEALTHY and d.stable is not None and d.stable.revision == 2), "the release ended",
        timeout=120)

    if ended.phase == Phase.FAILED:
        stable_image = STABLE
        workload = shop.workload()
        assert workload.spec.paused is True, "a failed promotion must hold the Deployment"
        assert [c.image for c in workload.spec.template.spec.containers] == [STABLE], \
            "a failed promotion must put the stable template back"
        await until(lambda: asyncio.to_thread(shop.own_images), lambda images: images == [STABLE] * 4,
                    "the Deployment's own pods back on the stable image", timeout=90)
        assert shop.canary_replicas() == 0
        if all(step.status == StepStatus.SUCCEEDED for step in ended.steps):  # it was the promotion that failed
            assert ended.last_error is not None and "promot" in ended.last_error.lower(), ended.last_error
    else:
        stable_image = NEW
        await until(lambda: asyncio.to_thread(shop.own_images), lambda images: images == [NEW] * 4,
                    "all four pods on the promoted image", timeout=60)

    # The job still delivers: the next edit is a canary, not a rollout of the Deployment itself.
    shop.set_image(NEXT)
    await until(lambda: asyncio.to_thread(shop.canary_replicas), lambda n: n > 0, "a canary for the next edit")
    assert set(shop.own_images()) == {stable_image}, "the next edit must not reach the Deployment's own pods"


async def test_an_edit_during_a_promotion_waits_for_its_own_release(shop: Shop) -> None:
    await shop.attach(steps=[{"setWeight": 50}, {"pause": {}}], progressDeadline="60s")
    # Slow pods, so the promotion (a rollout of four of them) takes a few seconds.
    shop.set_image(NEW, annotations={READY_DELAY_ANNOTATION: "2s"})
    await shop.wait(lambda d: d.phase == Phase.PAUSED, "the gate", timeout=60)

    with OwnPodSampler(shop, NEXT) as sampler:
        await canary.operate(shop.temporal, shop.namespace, "web", names.CONTINUE, OperationRequest(actor="e2e"))
        await shop.wait(lambda d: d.phase == Phase.PROMOTING, "the promotion")
        shop.set_image(NEXT)

        def settled(d: JobDetails) -> bool:
            if sampler.sightings:
                return True  # the invariant is broken already: stop waiting, report it below
            next_release = d.canary is not None and d.canary.images == {"app": NEXT}
            return d.stable is not None and d.stable.images == {"app": NEW} and next_release

        final = await shop.wait(settled, "revision 2 stable and the edit as the next canary", timeout=120)
        assert not sampler.sightings, (
            f"{NEXT} ran outside the canary before its release was promoted ({len(sampler.sightings)} sightings)")
    assert sampler.samples > 10
    assert final.stable is not None and final.stable.revision == 2
    versions = await canary.versions(shop.temporal, shop.namespace, "web")
    assert any(v.revision == 2 and v.outcome == Outcome.PROMOTED for v in versions.history)


async def test_new_rules_at_a_gate_do_not_open_it(shop: Shop) -> None:
    await shop.attach(steps=[{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}])
    shop.set_image(NEW)
    await shop.wait(lambda d: d.phase == Phase.PAUSED and d.current_step == 1, "the first gate")
    await canary.operate(shop.temporal, shop.namespace, "web", names.CONTINUE, OperationRequest(actor="e2e"))
    second = await shop.wait(lambda d: d.phase == Phase.PAUSED and d.current_step == 3 and d.weight == 50,
                             "the second gate")
    continued = kinds(second, "continued")
    await canary.operate(shop.temporal, shop.namespace, "web", names.UPDATE_RULES, UpdateRulesRequest(
        actor="e2e", rules={"steps": [{"setWeight": 10}, {"pause": {}}, {"setWeight": 90}, {"pause": {}}]}))

    # Nobody continued: for a few seconds the job must stay at its gate at 50 %.
    for _ in range(25):
        details = await shop.details()
        assert details.phase == Phase.PAUSED and details.weight == 50, (details.phase, details.weight)
        assert kinds(details, "continued") == continued, [e for e in details.events if e.kind == "continued"]
        assert shop.canary_replicas() < 4, "the canary reached the 90 % count without a continue"
        await asyncio.sleep(0.2)

    await canary.operate(shop.temporal, shop.namespace, "web", names.CONTINUE, OperationRequest(actor="e2e"))
    at_90 = await shop.wait(lambda d: d.phase == Phase.PAUSED and d.weight == 90, "90 % after a new continue")
    assert at_90.canary_replicas == 4 and shop.canary_replicas() == 4


async def test_concurrent_continues_for_one_gate_open_only_that_gate(shop: Shop) -> None:
    await shop.attach(steps=[{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {}},
                             {"setWeight": 75}, {"pause": {}}])
    shop.set_image(NEW)
    gate = await shop.wait(lambda d: d.phase == Phase.PAUSED and d.current_step == 1, "the first gate")
    assert gate.canary is not None
    release = gate.canary.revision

    async def press(n: int) -> OperationResult | BaseException:
        # Twenty operators who all saw gate 2 of this release, pressing over a couple of seconds:
        # some of them land after the job has moved on to the next gate.
        await asyncio.sleep(n * 0.15)
        try:
            return await canary.operate(shop.temporal, shop.namespace, "web", names.CONTINUE,
                                        OperationRequest(actor=f"operator-{n}", release=release, step=2))
        except CanaryError as error:
            return error

    answers = await asyncio.gather(*(press(n) for n in range(20)))
    final = await shop.wait(lambda d: d.phase in (Phase.PAUSED, Phase.HEALTHY), "the job at rest")
    refused = [a for a in answers if isinstance(a, BaseException)]
    accepted = [a for a in answers if isinstance(a, OperationResult)]
    assert all(isinstance(a, Conflict) for a in refused), refused
    opened = [a.message for a in accepted if "already" not in a.message]
    assert len(opened) == 1, [a.message for a in accepted]
    assert final.phase == Phase.PAUSED and final.current_step == 3 and final.weight == 50, (
        final.phase, final.current_step, final.weight)
    assert final.steps[3].status != StepStatus.SUCCEEDED and final.steps[5].status != StepStatus.SUCCEEDED


async def test_queued_versions_supersede_and_terminate_ends_them_all(shop: Shop) -> None:
    second, third = "registry.local/web:b", "registry.local/web:c"
    await shop.attach()
    shop.set_image(NEW)
    await shop.wait(lambda d: d.phase == Phase.PAUSED, "the first gate")
    await canary.operate(shop.temporal, shop.namespace, "web", names.UPDATE_VERSION,
                         UpdateVersionRequest(image=second, actor="e2e"))
    await canary.operate(shop.temporal, shop.namespace, "web", names.UPDATE_VERSION,
                         UpdateVersionRequest(image=third, actor="e2e"))
    await shop.wait(lambda d: d.phase == Phase.PAUSED and d.canary is not None
                    and d.canary.images == {"app": third}, f"{third} as the canary", timeout=90)
    # B is superseded visibly: as a release that ended so, or dropped before it started.
    versions = await canary.versions(shop.temporal, shop.namespace, "web")
    details = await shop.details()
    assert any(v.images == {"app": second} and v.outcome == Outcome.SUPERSEDED for v in versions.history) or any(
        e.kind == "superseded" and second in e.message for e in details.events), (
        [(v.revision, v.images, v.outcome) for v in versions.history], [e.message for e in details.events])

    await canary.operate(shop.temporal, shop.namespace, "web", names.TERMINATE,
                         OperationRequest(actor="e2e", reason="enough"))
    done = await shop.wait(lambda d: d.phase == Phase.TERMINATED, "terminated")
    await until(lambda: asyncio.to_thread(shop.canary_replicas), lambda n: n == 0, "the canary at zero")
    started = kinds(done, "release-started")
    # Nothing queued may start afterwards.
    for _ in range(25):
        details = await shop.details()
        assert details.phase == Phase.TERMINATED and details.canary is None, (details.phase, details.canary)
        assert kinds(details, "release-started") == started
        assert shop.canary_replicas() == 0
        await asyncio.sleep(0.2)
