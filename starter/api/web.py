"""The web page: a job list and a job's details page, served by the API's own app.

Server-rendered Jinja2 templates with a little plain JavaScript, no build step. The page signs
in with an API token and keeps only a session id in an HttpOnly, SameSite=Strict cookie
(:mod:`starter.api.sessions`); its scripts call the same JSON API as everyone else (so the
same roles apply, and a refused operation shows the API's own message), adding the
``X-Requested-With`` header without which the API ignores the cookie. Signing in and out must
come from this site (:func:`starter.api.security.require_same_origin`).
While a job is open, the page fetches its live part (``/live``, rendered by the same template
as the first load) every second or so and swaps it in: no reload, and no second renderer in
JavaScript that could drift from the server's.
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations at run time.

import asyncio
from datetime import UTC, datetime
from pathlib import Path as FilePath
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from starter import analysis_format
from starter import client as canary
from starter.api.auth import OPERATION_ROLES, Principal
from starter.api.deps import SESSION_COOKIE, JobName, Namespace, authenticate, clients, sessions, tokens
from starter.api.errors import ApiError, ErrorCode, classify
from starter.api.reads import job_reads
from starter.api.rendered import RenderedPages
from starter.api.router_view import router_view
from starter.api.security import require_same_origin
from starter.api.sparkline import sparkline
from starter.errors import CanaryError, JobNotFound
from starter.render import PHASE_NOTES, age, duration, image_pairs, step_story
from workflows import names
from workflows.fields import NAME_PATTERN
from workflows.models import JobDetails, JobVersions, OperationRequest, Phase, StepStatus, Version
from workflows.spec import workflow_id
from workflows.verdict import format_value

HERE = FilePath(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
# Phases in which the job moves by itself (or waits to recover by itself): the page polls faster then.
ACTIVE_PHASES = {Phase.INITIALIZING, Phase.PROGRESSING, Phase.PAUSED, Phase.PROMOTING, Phase.ROLLING_BACK,
                 Phase.WORKLOAD_MISSING, Phase.ERROR}

router = APIRouter(include_in_schema=False)


# -- template helpers ----------------------------------------------------------------------------


def _ago(value: datetime | None, now: datetime | None = None) -> str:
    return f"{age(value, now or datetime.now(UTC))} ago" if value else ""


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


templates.env.filters["ago"] = _ago
templates.env.filters["when"] = _when
templates.env.filters["images"] = image_pairs
# What a phase that needs the operator's eye means, shown beside its badge.
templates.env.globals["phase_notes"] = {phase.value: note for phase, note in PHASE_NOTES.items()}


def step_state(job: JobDetails, index: int) -> str:
    """The label a step shows: its status, with "paused" for the step the job waits in."""
    step = job.steps[index]
    if index == job.current_step and job.phase == Phase.PAUSED and step.status == StepStatus.RUNNING:
        return "paused"
    return step.status.value


templates.env.globals["step_state"] = step_state
templates.env.globals["step_story"] = step_story
templates.env.filters["duration"] = duration

# The toolbar's operations, and the ones a job that does not answer still takes (as signals:
# Temporal records them, and the job acts on them once its worker runs again).
TOOLBAR = (names.UPDATE_VERSION, names.UPDATE_RULES, names.CONTINUE, names.PROMOTE, names.TERMINATE)
SIGNALLED = (names.TERMINATE, names.DELETE)


def role_refusal(principal: Principal, operation: str) -> str | None:
    """Why the signed-in user may not run ``operation`` at all (the API's 403, said before asking)."""
    needed = OPERATION_ROLES[operation]
    if principal.role < needed:
        return f"{principal.name} has role {principal.role.label}; {operation} needs role {needed.label}"
    return None


def blocked_actions(job: JobDetails, principal: Principal) -> dict[str, str | None]:
    """For each toolbar operation (and rollback), why it cannot act now; None when it can.

    The same reasons the API gives (role first, then the job's state), so a disabled button's
    tooltip says what a click would have been told after its confirm dialog.
    """
    phase = job.phase.value
    state: dict[str, str | None] = {
        names.CONTINUE: None if job.phase == Phase.PAUSED else f"nothing to continue: the job is {phase}, not paused",
        names.PROMOTE: None if job.canary is not None else f"no release is running (the job is {phase})",
        names.TERMINATE: None if job.canary is not None else f"no release is running (the job is {phase})",
    }
    if job.phase in (Phase.PROMOTING, Phase.ROLLING_BACK):
        being = "promoted" if job.phase == Phase.PROMOTING else "rolled back"
        for operation in (names.CONTINUE, names.PROMOTE, names.TERMINATE):
            state[operation] = state[operation] or f"the release is already being {being}"
    return {operation: role_refusal(principal, operation) or state.get(operation)
            for operation in (*TOOLBAR, names.ROLLBACK)}
# The analysis section reads like ``canaryctl get``'s: the same words, from the same functions.
templates.env.globals.update(
    run_title=analysis_format.run_title, counts=analysis_format.counts, format_value=format_value,
    measurement_text=analysis_format.measurement_text, metric_reason=analysis_format.metric_reason,
    last_error=analysis_format.last_error, sparkline=sparkline)


# -- sessions ------------------------------------------------------------------------------------


def _signed_in(request: Request) -> Principal | None:
    return sessions(request).find(request.cookies.get(SESSION_COOKIE))


def _to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/ui/login?next={quote(target)}", status_code=303)


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never an open redirect to another host."""
    if not target:
        return "/ui/jobs"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/ui/jobs"
    return target


def _context(request: Request, principal: Principal | None, **values: Any) -> dict[str, Any]:
    roles = {operation: role.label for operation, role in OPERATION_ROLES.items()}
    values.setdefault("now", datetime.now(UTC))
    return {"request": request, "principal": principal, "roles": roles, **values}


# -- routes --------------------------------------------------------------------------------------


@router.get("/")
async def root() -> RedirectResponse:
    """The page is the front door; the API lives under /api/v1 (documented at /docs)."""
    return RedirectResponse("/ui/jobs", status_code=303)


@router.get("/ui/login", response_class=HTMLResponse)
async def login_page(request: Request, next: str | None = None) -> Response:
    """The sign-in form: one field, the API token."""
    return templates.TemplateResponse(request, "login.html", _context(request, None, next=_safe_next(next)))


@router.post("/ui/login", response_class=HTMLResponse)
async def login(request: Request, token: Annotated[str, Form()] = "", next: Annotated[str, Form()] = ""
                ) -> Response:
    """Check the token and start a session; a wrong one shows the form again (401).

    Only from this site: a cross-site sign-in would put the attacker's session in the victim's
    browser (login CSRF), and the victim's actions on record under the attacker's name.
    """
    require_same_origin(request)
    principal = tokens(request).find(token.strip()) if token.strip() else None
    if principal is None:
        return templates.TemplateResponse(
            request, "login.html", _context(request, None, next=_safe_next(next), error="unknown token"),
            status_code=401)
    response = RedirectResponse(_safe_next(next), status_code=303)
    store = sessions(request)
    store.revoke(request.cookies.get(SESSION_COOKIE))  # a new sign-in replaces the session, never adds one
    response.set_cookie(SESSION_COOKIE, store.create(principal), max_age=int(store.lifetime), httponly=True,
                        samesite="strict", secure=request.url.scheme == "https", path="/")
    return response


@router.post("/ui/logout")
async def logout(request: Request) -> RedirectResponse:
    """End the session on the server (its cookie is refused from now on) and drop the cookie."""
    require_same_origin(request)
    sessions(request).revoke(request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/ui/jobs", response_class=HTMLResponse)
async def jobs_page(request: Request,
                    namespace: Annotated[str | None, Query(pattern=NAME_PATTERN, max_length=63)] = None,
                    status: Phase | None = None) -> Response:
    """The job list, filtered like ``GET /api/v1/jobs``."""
    principal = _signed_in(request)
    if principal is None:
        return _to_login(request)
    error = None
    jobs: list[canary.JobSummary] = []
    try:
        jobs = await job_reads(request).jobs(namespace, status.value if status else None, False)
    except (ApiError, CanaryError) as err:
        error = err.message
    return templates.TemplateResponse(request, "jobs.html", _context(
        request, principal, jobs=jobs, namespace=namespace or "", status=status.value if status else "",
        phases=[p.value for p in Phase], error=error))


async def _load(request: Request, namespace: str, name: str) -> tuple[JobDetails, JobVersions]:
    """Both queries at once, each shared with every other reader of this job (starter.api.reads)."""
    reads = job_reads(request)
    return await asyncio.gather(reads.details(namespace, name), reads.versions(namespace, name))


def pause_ends_at(job: JobDetails, now: datetime) -> datetime | None:
    """When the current timed pause ends: the page counts down to it in the browser."""
    if job.pause_until is not None:
        return job.pause_until
    return None if job.pause_remaining is None else now + job.pause_remaining


def _live_context(request: Request, principal: Principal, job: JobDetails, versions: JobVersions
                  ) -> dict[str, Any]:
    history: list[Version] = versions.history
    now = datetime.now(UTC)
    ends = pause_ends_at(job, now)
    current = job.canary or job.stable
    return _context(request, principal, job=job, versions=versions, history=history, now=now,
                    pause_ends_ms=int(ends.timestamp() * 1000) if ends else None,
                    server_now_ms=int(now.timestamp() * 1000), active=job.phase in ACTIVE_PHASES,
                    containers=sorted(current.images) if current else [],
                    blocked=blocked_actions(job, principal), router=router_view(job))


@router.get("/ui/namespaces/{namespace}/jobs/{name}", response_class=HTMLResponse)
async def job_page(request: Request, namespace: Namespace, name: JobName) -> Response:
    """A job's details page; its live part refreshes itself."""
    principal = _signed_in(request)
    if principal is None:
        return _to_login(request)
    try:
        job, versions = await _load(request, namespace, name)
    except JobNotFound as err:
        return templates.TemplateResponse(request, "missing.html", _context(
            request, principal, namespace=namespace, name=name, error=err.message), status_code=classify(err).status)
    except CanaryError as err:
        # The job exists but its workflow does not answer: say so, what to do, and what still works.
        return templates.TemplateResponse(request, "unanswered.html", _context(
            request, principal, namespace=namespace, name=name, error=err.message,
            workflow_id=workflow_id(namespace, name),
            signalled={operation: role_refusal(principal, operation) for operation in SIGNALLED}),
            status_code=classify(err).status)
    return _job_html(request, principal, "job.html", job, versions)


@router.get("/ui/namespaces/{namespace}/jobs/{name}/live", response_class=HTMLResponse)
async def job_live(request: Request, namespace: Namespace, name: JobName) -> Response:
    """The live part of the details page, for the page's polling script (errors as JSON)."""
    principal = _signed_in(request)
    if principal is None:
        raise ApiError(ErrorCode.UNAUTHORIZED, "signed out: sign in again")
    job, versions = await _load(request, namespace, name)
    return _job_html(request, principal, "_live.html", job, versions)


def _job_html(request: Request, principal: Principal, template: str, job: JobDetails, versions: JobVersions
              ) -> HTMLResponse:
    """The job's page (or its live part) for this reader: kept while its answers are current.

    Without a countdown only: one must carry the moment it was sent (see starter.api.rendered).
    """
    def render() -> str:
        return templates.get_template(template).render(_live_context(request, principal, job, versions))

    if pause_ends_at(job, datetime.now(UTC)) is not None:
        return HTMLResponse(render())
    pages: RenderedPages = request.app.state.pages
    key = (template, job.namespace, job.name, principal.name, principal.role)
    return HTMLResponse(pages.html(key, (job, versions), render))


@router.post("/ui/namespaces/{namespace}/jobs/{name}/signal/{operation}")
async def job_signal(request: Request, namespace: Namespace, name: JobName, operation: str,
                     body: OperationRequest | None = None) -> dict[str, str]:
    """Send ``terminate`` or ``delete`` as a signal, for a job whose workflow does not answer updates.

    Temporal records a signal whether or not a worker runs: the job acts on it (with the same
    checks as the update) once it runs again. Same session rules and roles as the API.
    """
    if operation not in SIGNALLED:
        raise ApiError(ErrorCode.NOT_FOUND, f"only {' and '.join(SIGNALLED)} can be sent as signals")
    principal = authenticate(request, None)
    refusal = role_refusal(principal, operation)
    if refusal:
        raise ApiError(ErrorCode.FORBIDDEN, refusal)
    sent = (body or OperationRequest()).model_copy(update={"actor": principal.name})
    try:
        await canary.signal_operation(await clients(request).get(), namespace, name, operation, sent)
    finally:
        job_reads(request).changed()  # the next read shows what the signal did, not a kept answer
    return {"message": f"{operation} sent as a signal; Temporal keeps it until the job's worker runs it"}


def install_web(app: FastAPI) -> None:
    """Add the page's routes and its static files to ``app``."""
    app.state.pages = RenderedPages()
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=str(HERE / "static")), name="static")
