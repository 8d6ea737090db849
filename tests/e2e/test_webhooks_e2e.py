"""Webhooks end to end: a real HTTP receiver gets every hook of a promoted release, in order."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Shop
from tests.hook_receiver import hook_receiver
from workflows.models import Phase

pytestmark = pytest.mark.cluster


async def test_a_promoted_release_calls_its_hooks_in_order_and_waits_for_confirmation(shop: Shop) -> None:
    with hook_receiver() as (base, received):
        received.script["/confirm"] = [503, 200]  # not yet, then yes (asked again 10 s later)
        hooks = [{"name": name, "type": kind, "url": f"{base}/{name}", "timeout": "5s",
                  "metadata": {"team": "shop"}}
                 for name, kind in (("pre", "pre-rollout"), ("roll", "rollout"),
                                    ("confirm", "confirm-promotion"), ("post", "post-rollout"))]
        await shop.attach(steps=[{"setWeight": 25}, {"setWeight": 50}], webhooks=hooks)

        shop.set_image("registry.local/web:2")
        waiting = await shop.wait(lambda d: d.phase == Phase.PAUSED, "waiting for confirm-promotion")
        assert "confirm-promotion webhook confirm answered HTTP 503" in (waiting.pause_reason or "")
        assert shop.own_images() == ["registry.local/web:1"] * 2, "not promoted while the hook says no"
        assert shop.canary_replicas() == 2

        done = await shop.wait(lambda d: d.phase == Phase.HEALTHY and d.stable is not None
                               and d.stable.revision == 2, "confirmed and promoted", timeout=90)
        assert shop.ready_images() == ["registry.local/web:2"] * 4
        await shop.wait(lambda d: any(e.kind == "webhook" and "post-rollout" in e.message for e in d.events),
                        "post-rollout called")

    calls = [(path, body["type"], body["step"]) for path, body, _ in received.requests]
    assert calls == [("/pre", "pre-rollout", None), ("/roll", "rollout", 1), ("/roll", "rollout", 2),
                     ("/confirm", "confirm-promotion", None), ("/confirm", "confirm-promotion", None),
                     ("/post", "post-rollout", None)]
    bodies = received.bodies()
    assert all(b["job"] == "web" and b["namespace"] == shop.namespace and b["revision"] == 2 for b in bodies)
    assert all(b["images"] == {"app": "registry.local/web:2"} and b["metadata"] == {"team": "shop"}
               for b in bodies)
    assert bodies[-1]["outcome"] == "promoted" and bodies[-1]["phase"] == "healthy"
    assert done.last_error is None
