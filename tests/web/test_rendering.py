"""The job page's server-side rendering with fixed data: no server, no browser."""

from __future__ import annotations

import re

from starlette.requests import Request

from starter.api import web
from starter.api.auth import Principal, Role
from tests.starter.test_render import details
from workflows.models import JobVersions, Phase

REQUEST = Request({"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""})
ADMIN = Principal(token="admin-token-0123", role=Role.ADMIN, name="alice")


def live(**fields: object) -> str:
    job = details(**fields)
    versions = JobVersions(stable=job.stable, canary=job.canary, history=[])
    return web.templates.get_template("_live.html").render(web._live_context(REQUEST, ADMIN, job, versions))


def test_phases_that_wait_for_the_cluster_have_their_own_badge_and_say_why() -> None:
    page = live(phase=Phase.WORKLOAD_MISSING)
    badge = re.search(r'<span id="job-status" class="([^"]+)"[^>]*>([^<]+)</span>', page)
    assert badge is not None and badge.groups() == ("phase phase-workload-missing", "workload-missing")
    assert "the Deployment is gone; the job waits for it to come back" in page
    assert 'data-active="true"' in page  # it recovers by itself: the page keeps polling quickly
    assert "phase-error" in live(phase=Phase.ERROR, last_error="forbidden")
    assert 'id="phase-note"' not in live()


def test_the_page_knows_the_gate_it_shows() -> None:
    page = live()  # paused at step 2 of release 2
    assert 'data-release="2"' in page and 'data-step="2"' in page
    idle = live(phase=Phase.HEALTHY, canary=None, current_step=None, steps=[])
    assert 'data-release=""' in idle and 'data-step=""' in idle
