"""The job page's server-side rendering with fixed data: no server, no browser."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

from starlette.requests import Request

from starter.api import web
from starter.api.auth import Principal, Role
from tests.starter.analysis_data import (
    INC,
    SUCCESS_RATE_INCONCLUSIVE,
    background_with_error,
    failed_step,
    inconclusive_step,
    measured,
    metric,
    view,
)
from tests.starter.test_render import details
from workflows.analysis_run import AnalysisKind
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


# -- analysis ------------------------------------------------------------------------------------


class Elements(HTMLParser):
    """Every start tag of a page and its visible text, as a browser's parser would see them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> Elements:
    parser = Elements()
    parser.feed(page)
    return parser


def metric_row(page: str, name: str) -> str:
    row = re.search(rf'<tr data-metric="{re.escape(name)}".*?</tr>', page, re.S)
    assert row is not None, name
    return row.group(0)


def cells(row: str) -> list[str]:
    """The text of a table row's cells, whitespace collapsed."""
    return [" ".join(re.sub(r"<[^>]+>", " ", html.unescape(cell)).split())
            for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]


def recent(row: str) -> str:
    """The recent values as text, beside the sparkline."""
    found = re.search(r'<span class="mono recent-values">(.*?)</span>', row, re.S)
    assert found is not None
    return html.unescape(found.group(1))


def at_analysis_gate(**fields: object) -> str:
    return live(pause_reason=SUCCESS_RATE_INCONCLUSIVE, pause_remaining=None,
                analyses=[inconclusive_step(), background_with_error()], **fields)


def test_each_analysis_run_is_a_table_of_its_metrics() -> None:
    page = at_analysis_gate()
    runs = re.findall(r'<div class="analysis-run" data-kind="(\w+)" data-step="(\d*)"\s+data-phase="(\w+)">', page)
    assert runs == [("step", "1", "inconclusive"), ("background", "0", "running")]
    assert "<h3>Step 2 <span class=\"verdict verdict-inconclusive\">inconclusive</span>" in page
    assert "<h3>Background (from step 1) <span class=\"verdict verdict-running\">running</span>" in page
    assert cells(metric_row(page, "success-rate"))[1:4] == [
        "inconclusive", "no data", "1 successful, 1 inconclusive / 2 measured"]
    assert recent(metric_row(page, "success-rate")) == "0.995, no data"
    assert cells(metric_row(page, "latency-p99"))[1:4] == ["running", "135.5", "2 successful / 2 measured"]
    assert recent(metric_row(page, "latency-p99")) == "120, 135.5"
    error_rate = cells(metric_row(page, "error-rate"))
    assert error_rate[0] == "error-rate errors last error: connection refused by prometheus:9090"
    assert error_rate[1:4] == ["running", "0.02", "2 successful, 1 error / 3 measured"]
    assert recent(metric_row(page, "error-rate")) == "0.01, 0.02, error"


def test_a_failed_metric_names_its_value_and_why() -> None:
    page = live(analyses=[failed_step()])
    row = metric_row(page, "success-rate")
    assert cells(row)[1:4] == ["failed", "0.93", "1 failed / 1 measured"]
    assert recent(row) == "0.93 (failed)"
    # The condition's "<" is text, not markup.
    assert "(failureCondition result &lt; 0.95); 1 failed, failureLimit 0</p>" in page


def test_the_gate_says_why_it_holds() -> None:
    page = at_analysis_gate()
    reason = re.search(r'<dd id="pause-reason"[^>]*>(.*?)</dd>', page, re.S)
    assert reason is not None
    assert SUCCESS_RATE_INCONCLUSIVE in reason.group(1) and "Continue goes on" in reason.group(1)
    assert 'id="pause-reason"' not in live() and 'id="analysis"' not in live()


def test_recent_values_are_a_sparkline_without_script() -> None:
    page = at_analysis_gate()
    tags = parse(page).tags
    # One sparkline per metric (the page's other SVG is the weight bar).
    charts = [attrs for tag, attrs in tags if tag == "svg" and attrs.get("class") != "bar"]
    assert len(charts) == 3 and all(attrs["class"] == "spark" for attrs in charts)
    assert not any(tag == "script" or any(name.startswith("on") for name in attrs) for tag, attrs in tags)
    row = metric_row(page, "error-rate")
    assert '<polyline class="spark-line" points="3.0,25.0 60.0,3.0"/>' in row
    assert '<title>error at 11:58:30 UTC: connection refused by prometheus:9090</title>' in row


HOSTILE = '</td></tr><script>alert(1)</script><img src=x onerror="alert(2)">&amp;'


def test_hostile_text_from_specs_and_providers_stays_text() -> None:
    run = view(AnalysisKind.STEP, 1, [(metric("success-rate", inconclusiveLimit=0), measured(
        (INC, 0.5, HOSTILE)))], template=HOSTILE)
    assert HOSTILE in run.reason  # the verdict quotes the provider's message
    page = live(analyses=[run], pause_reason=f"step 2: {HOSTILE}")
    parsed = parse(page)
    assert not any(tag in ("script", "img") for tag, _ in parsed.tags)
    assert not any(name.startswith("on") for _, attrs in parsed.tags for name in attrs)
    text = "".join(parsed.text)
    assert text.count(HOSTILE) >= 4  # the gate, the run's reason, the template name, the point's title
    assert cells(metric_row(page, "success-rate"))[1] == "inconclusive"


# -- traffic router ------------------------------------------------------------------------------


ISTIO_RULES = {"traffic": {"routing": "istio", "stableService": "web-stable", "canaryService": "web-canary",
                           "istio": {"virtualService": {"name": "web", "routes": ["primary", "api"]}}}}


def test_a_routed_job_shows_its_router_objects_and_the_weights_each_route_holds() -> None:
    page = live(routing="istio", rules=ISTIO_RULES, weight=10, actual_weight=10,
                routes=[{"route": "primary", "stable": 90, "canary": 10}, {"route": "api", "stable": 90, "canary": 10}])
    router = re.search(r'<dd id="job-router" data-routing="istio">(.*?)</dd>', page, re.S)
    assert router is not None and router.group(1) == "Istio: VirtualService shop/web (routes: primary, api)"
    assert re.search(r'id="job-router-services">web-stable \(stable\), web-canary \(canary\)<', page)
    held = [tag for tag in parse(page).tags if tag[0] == "li" and "data-route" in tag[1]]
    assert [(a["data-route"], a["data-stable"], a["data-canary"]) for _, a in held] == [
        ("primary", "90", "10"), ("api", "90", "10")]
    assert "the router holds 10%" in page and "of ready pods" not in page


def test_a_router_not_set_up_yet_says_so_and_a_replica_ratio_job_shows_no_route() -> None:
    pending = live(routing="gatewayAPI",
                   rules={"traffic": {"routing": "gatewayAPI", "gatewayAPI": {"httpRoute": "web"}}})
    assert "Gateway API: HTTPRoute shop/web" in pending and "not set up yet" in pending
    plain = live()
    assert 'data-routing="replicaRatio"' in plain and "its share of Ready pods" in plain
    assert 'id="route-weights"' not in plain and 'id="job-router-services"' not in plain


def test_a_stable_side_sized_to_its_weight_says_so_with_both_sides_pods() -> None:
    rules = {"traffic": {**ISTIO_RULES["traffic"], "dynamicStableScale": True}}
    page = live(routing="istio", rules=rules, weight=75, actual_weight=75, replicas=4, canary_replicas=3,
                stable_replicas=1, routes=[{"route": "primary", "stable": 25, "canary": 75}])
    line = re.search(r'<dd id="job-stable-scale">(.*?)</dd>', page, re.S)
    assert line is not None and "dynamicStableScale" in line.group(1)
    assert "1 stable, 3 canary pods now" in line.group(1)
    assert 'id="job-stable-scale"' not in live(routing="istio", rules=ISTIO_RULES)


def test_router_names_from_the_rules_are_escaped() -> None:
    page = live(routing="istio", rules={"traffic": {"routing": "istio", "istio": {
        "virtualService": {"name": "web", "routes": ["<b>x</b>"]}}}},
                routes=[{"route": "<b>x</b>", "stable": 100, "canary": 0}])
    assert "<b>x</b>" not in page and html.escape("<b>x</b>") in page


def test_a_blue_green_job_shows_what_its_services_serve() -> None:
    assert 'id="active-service"' not in live()
    page = live(mode="blueGreen", steps=[], current_step=None, blue_green={
        "active_service": "web", "active_revision": 1, "preview_service": "web-preview", "preview_revision": 2,
        "stage": "preview"})
    assert re.search(r'id="job-mode">blueGreen<', page)
    assert re.search(r'id="active-service">web: revision 1</dd>', page)
    assert re.search(r'id="preview-service">web-preview: revision 2</dd>', page)
