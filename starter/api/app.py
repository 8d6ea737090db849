"""The HTTP API: the same jobs, updates and queries as ``canaryctl``, over HTTP.

Every route is a thin shell around :mod:`starter.client` (the functions ``canaryctl`` uses),
so the API cannot drift from the CLI: it authenticates the caller, validates the body with the
project's own models (which also makes them the OpenAPI schemas), stamps the caller's token
name as the operation's ``actor``, and turns a :class:`CanaryError` into a status code with
:func:`starter.api.errors.classify`. No route ever answers with a stack trace: every failure
leaves as an :class:`~starter.api.errors.ErrorBody`.

The Temporal client is made on first use by the ``client_factory`` the caller passes (and
kept once it connected), so the app starts, serves its page and answers its probes while
Temporal is still down, and reports 503 instead of failing to boot.
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations at run time.

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, Depends, FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from starter import client as canary
from starter.api.auth import CREATE_ROLE, OPERATION_ROLES, Principal, Role, TokenStore
from starter.api.errors import ApiError, ErrorBody, ErrorCode, FieldError, classify, invalid
from starter.client import JobSummary
from starter.errors import CanaryError
from workflows import names
from workflows.models import (
    JobDetails,
    JobVersions,
    OperationRequest,
    OperationResult,
    Phase,
    RollbackRequest,
    UpdateRulesRequest,
    UpdateVersionRequest,
)
from workflows.spec import NAME_PATTERN, STEP_KINDS, DeliveryRules, JobSpec, workflow_id

log = logging.getLogger("canary.api")

ClientFactory = Callable[[], Awaitable[Client]]

API_PREFIX = "/api/v1"
# The web page signs in by putting the token into this cookie (HttpOnly, SameSite=Strict).
SESSION_COOKIE = "canary_session"
# A cookie alone never authenticates an API call: the page's scripts also send this header,
# which a cross-site form cannot, and no CORS is configured that would let another site do so.
WEB_HEADER = "X-Requested-With"
WEB_HEADER_VALUE = "canary-web"

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description} for status, description in [
        (400, "the body is not JSON"),
        (401, "no token, or an unknown one"),
        (403, "the token's role may not do this"),
        (404, "no such job"),
        (409, "the job's state does not allow this now"),
        (422, "an input field is invalid; `field` names it"),
        (503, "Temporal, the canary worker or Kubernetes cannot be reached"),
    ]
}

Namespace = Annotated[str, Path(pattern=NAME_PATTERN, max_length=63, description="Kubernetes namespace of the job")]
JobName = Annotated[str, Path(pattern=NAME_PATTERN, max_length=40, description="name of the canary job")]


class Health(BaseModel):
    """Answer of the probes."""

    status: str
    temporal: str | None = None


class WhoAmI(BaseModel):
    """The caller as the API sees it: the name recorded as actor, and the role."""

    name: str
    role: str


class ClientHolder:
    """Connects on first use and keeps the client; a failed connect is retried on the next call."""

    def __init__(self, factory: ClientFactory) -> None:
        self._factory = factory
        self._client: Client | None = None
        self._lock: asyncio.Lock | None = None

    async def get(self) -> Client:
        """The connected client, or a 503 saying why there is none."""
        if self._client is not None:
            return self._client
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._client is None:
                try:
                    self._client = await self._factory()
                except CanaryError:
                    raise
                except Exception as err:  # the factory is the caller's: any failure means "no Temporal"
                    raise ApiError(ErrorCode.UNAVAILABLE, f"cannot reach Temporal: {err}") from None
            return self._client


# -- authentication ----------------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, scheme_name="bearer",
                     description="A token configured by the operator; its role decides what it may do.")


def _authenticate(request: Request, credentials: HTTPAuthorizationCredentials | None, tokens: TokenStore
                  ) -> Principal:
    """The bearer token's holder; the page's session cookie counts only with the page's header."""
    token = credentials.credentials if credentials is not None else None
    if token is None:
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie and request.headers.get(WEB_HEADER) == WEB_HEADER_VALUE:
            token = cookie
    if not token:
        raise ApiError(ErrorCode.UNAUTHORIZED, "a bearer token is required (Authorization: Bearer <token>)",
                       headers={"WWW-Authenticate": "Bearer"})
    principal = tokens.find(token)
    if principal is None:
        raise ApiError(ErrorCode.UNAUTHORIZED, "unknown token",
                       headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return principal


def _authorize(principal: Principal, needed: Role, what: str) -> Principal:
    if principal.role < needed:
        raise ApiError(ErrorCode.FORBIDDEN,
                       f"{principal.name} has role {principal.role.label}; {what} needs role {needed.label}")
    return principal


# -- validation helpers ------------------------------------------------------------------------


def field_path(loc: Sequence[int | str]) -> str:
    """A dotted field path without pydantic's location prefix and step-kind tags.

    ``("body", "steps", 0, "setWeight", "setWeight")`` becomes ``steps.0.setWeight``: the tag
    pydantic adds for a tagged union repeats the step's own key.
    """
    parts = list(loc)
    if parts and parts[0] in ("body", "path", "query", "header", "cookie"):
        parts = parts[1:]
    out: list[str] = []
    for index, part in enumerate(parts):
        if part in STEP_KINDS and index + 1 < len(parts) and parts[index + 1] == part:
            continue
        out.append(str(part))
    return ".".join(out)


def field_errors(errors: Sequence[Any], prefix: str = "") -> list[FieldError]:
    """Pydantic's error list as field/reason pairs."""
    result = []
    for problem in errors:
        loc = tuple(problem.get("loc", ()))
        path = field_path(loc) or ("body" if loc[:1] == ("body",) else "")
        path = f"{prefix}.{path}" if prefix and path else (prefix or path)
        reason = str(problem.get("msg", "invalid")).removeprefix("Value error, ")
        result.append(FieldError(field=path or None, reason=reason))
    return result


M = TypeVar("M", bound=BaseModel)


async def strictly(http: Request, model: type[M], parsed: M | None) -> M | None:
    """The body once more, validated in pydantic's strict mode.

    FastAPI validates bodies in lax mode, which turns ``0`` into ``false`` and ``"1"`` into
    ``1``: input the documented schema (and so a client generated from it) does not allow. The
    models are the workflow's own, so strictness is applied here, on the wire, not in them.
    """
    if parsed is None:
        return None
    try:
        return model.model_validate_json(await http.body(), strict=True)
    except ValidationError as err:
        raise _validation_error(field_errors(err.errors())) from None


def _validation_error(errors: list[FieldError]) -> ApiError:
    message = "; ".join(f"{e.field}: {e.reason}" if e.field else e.reason for e in errors) or "invalid input"
    return ApiError(ErrorCode.INVALID, message, errors)


# -- the app -----------------------------------------------------------------------------------


def _version() -> str:
    try:
        return package_version("canary-delivery")
    except PackageNotFoundError:
        return "0.0.0"


def create_app(client_factory: ClientFactory, tokens: TokenStore, *, web: bool = True) -> FastAPI:
    """The API (and, unless ``web`` is False, the web page) over one lazily connected client."""
    app = FastAPI(
        title="canary-delivery API",
        version=_version(),
        description="Start and steer canary delivery jobs. Every job is a durable Temporal workflow; "
                    "these endpoints call the same updates and queries as `canaryctl`. Authenticate with "
                    "`Authorization: Bearer <token>`; the token's name is recorded as the actor of "
                    "every operation.",
    )
    app.state.clients = ClientHolder(client_factory)
    app.state.tokens = tokens
    _install_error_handlers(app)
    app.include_router(router)
    if web:
        from starter.api.web import install_web

        install_web(app)
    return app


# -- dependencies ------------------------------------------------------------------------------


def require(role: Role, what: str) -> Callable[..., Principal]:
    """A dependency that authenticates the caller and checks that its role may do ``what``."""

    def dependency(request: Request,
                   credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
        return _authorize(_authenticate(request, credentials, request.app.state.tokens), role, what)

    return dependency


def _clients(request: Request) -> ClientHolder:
    holder: ClientHolder = request.app.state.clients
    return holder


# The client is connected inside the handler, not as a dependency: FastAPI runs dependencies
# before it validates the body, and a bad request must be a 422 even while Temporal is down.
Clients = Annotated[ClientHolder, Depends(_clients)]
Viewer = Annotated[Principal, Depends(require(Role.VIEWER, "reading jobs"))]
Creator = Annotated[Principal, Depends(require(CREATE_ROLE, "creating or replacing a job"))]


def _operator(operation: str) -> Any:
    return Depends(require(OPERATION_ROLES[operation], operation))


UpdateVersionActor = Annotated[Principal, _operator(names.UPDATE_VERSION)]
ContinueActor = Annotated[Principal, _operator(names.CONTINUE)]
PromoteActor = Annotated[Principal, _operator(names.PROMOTE)]
TerminateActor = Annotated[Principal, _operator(names.TERMINATE)]
RollbackActor = Annotated[Principal, _operator(names.ROLLBACK)]
UpdateRulesActor = Annotated[Principal, _operator(names.UPDATE_RULES)]
DeleteActor = Annotated[Principal, _operator(names.DELETE)]
OptionalRequest = Annotated[OperationRequest | None, Body()]
Status = Annotated[Phase | None, Query(description="only jobs in this phase")]
IncludeEnded = Annotated[bool, Query(alias="includeEnded", description="also jobs whose workflow has ended")]
NamespaceFilter = Annotated[str | None, Query(pattern=NAME_PATTERN, max_length=63,
                                                description="only jobs in this Kubernetes namespace")]

# -- routes ------------------------------------------------------------------------------------

router = APIRouter()
JOB = f"{API_PREFIX}/namespaces/{{namespace}}/jobs/{{name}}"


def _responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: ERROR_RESPONSES[status] for status in statuses}


READ = _responses(401, 403, 422, 503)
READ_JOB = _responses(401, 403, 404, 409, 422, 503)
WRITE = _responses(400, 401, 403, 404, 409, 422, 503)
APPLY: dict[int | str, dict[str, Any]] = {
    **WRITE,
    200: {"model": OperationResult, "description": "the job existed: its rules were replaced"},
    201: {"model": OperationResult, "description": "the job was created and has taken over its Deployment"},
}


@router.get("/healthz", response_model=Health, tags=["probes"], summary="Liveness: the process serves")
async def healthz() -> Health:
    """Liveness needs nothing else: a restart would not bring Temporal back."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, tags=["probes"], summary="Readiness: Temporal answers",
            responses=_responses(503))
async def readyz(request: Request) -> Health:
    """Ready when Temporal answers its health check: every job endpoint needs it."""
    holder: ClientHolder = request.app.state.clients
    temporal = await holder.get()
    try:
        await asyncio.wait_for(temporal.service_client.check_health(), timeout=5)
    except (RPCError, TimeoutError) as err:
        raise ApiError(ErrorCode.UNAVAILABLE, f"Temporal does not answer: {err}") from None
    return Health(status="ok", temporal=str(temporal.service_client.config.target_host))


@router.get(f"{API_PREFIX}/whoami", response_model=WhoAmI, tags=["auth"], responses=READ,
            summary="The caller's name (recorded as actor) and role")
async def whoami(principal: Viewer) -> WhoAmI:
    """Lets the web page (and a script) check a token before using it."""
    return WhoAmI(name=principal.name, role=principal.role.label)


@router.get(f"{API_PREFIX}/jobs", response_model=list[JobSummary], tags=["jobs"], responses=READ,
            summary="List jobs (all namespaces unless filtered)")
async def list_jobs(_: Viewer, clients: Clients, namespace: NamespaceFilter = None, status: Status = None,
                    include_ended: IncludeEnded = False) -> list[JobSummary]:
    """Jobs as Temporal's visibility store knows them (eventually consistent)."""
    return await canary.list_jobs(await clients.get(), namespace, status.value if status else None,
                                  include_closed=include_ended)


@router.get(f"{API_PREFIX}/namespaces/{{namespace}}/jobs", response_model=list[JobSummary], tags=["jobs"],
            responses=READ, summary="List the jobs of one namespace")
async def list_namespace_jobs(namespace: Namespace, _: Viewer, clients: Clients, status: Status = None,
                              include_ended: IncludeEnded = False) -> list[JobSummary]:
    """The same list, addressed like the job resources below it."""
    return await canary.list_jobs(await clients.get(), namespace, status.value if status else None,
                                  include_closed=include_ended)


@router.get(JOB, response_model=JobDetails, tags=["jobs"], responses=READ_JOB,
            summary="A job's details: phase, steps, weight, main version, recent events")
async def get_job(namespace: Namespace, name: JobName, _: Viewer, clients: Clients) -> JobDetails:
    """The workflow's ``details`` query."""
    temporal = await clients.get()
    job = await canary.details(temporal, namespace, name)
    if job.phase == Phase.INITIALIZING:
        await _check_attached(temporal, namespace, name)
    return job


@router.get(f"{JOB}/versions", response_model=JobVersions, tags=["jobs"], responses=READ_JOB,
            summary="A job's main version (stable, canary) and historical versions")
async def get_versions(namespace: Namespace, name: JobName, _: Viewer, clients: Clients) -> JobVersions:
    """The workflow's ``versions`` query."""
    temporal = await clients.get()
    result = await canary.versions(temporal, namespace, name)
    if result.stable is None:
        await _check_attached(temporal, namespace, name)
    return result


async def _check_attached(temporal: Client, namespace: str, name: str) -> None:
    """404 for a job whose workflow ended before it attached (refused at creation, or killed).

    Its workflow can still be queried, and would answer "initializing" for ever; for the caller
    the job does not exist, and the reason it was refused is the useful answer.
    """
    handle = temporal.get_workflow_handle(workflow_id(namespace, name))
    description = await handle.describe()
    if description.status in (None, WorkflowExecutionStatus.RUNNING):
        return
    reason = ""
    if description.status == WorkflowExecutionStatus.FAILED:
        try:
            await handle.result()
        except WorkflowFailureError as failure:
            cause = failure.cause
            reason = f": refused: {cause.message if isinstance(cause, ApplicationError) else cause}"
    else:
        reason = f": its workflow was {description.status.name.lower().replace('_', ' ')} before it attached"
    raise ApiError(ErrorCode.NOT_FOUND, f"no canary job {namespace}/{name}{reason}")


async def _apply(temporal: Client, spec: JobSpec, principal: Principal, response: Response) -> OperationResult:
    log.info("%s applies canary job %s/%s", principal.name, spec.namespace, spec.name)
    message = await canary.apply_job(temporal, spec, actor=principal.name)
    # apply_job says which happened; a created job answers 201, new rules for a running one 200.
    response.status_code = 201 if message.endswith(" created") else 200
    job = await canary.details(temporal, spec.namespace, spec.name)
    return OperationResult(message=message, phase=job.phase)


@router.post(f"{API_PREFIX}/jobs", response_model=OperationResult, tags=["jobs"], responses=APPLY,
             status_code=201, summary="Create a job from its spec (starts its workflow), or replace a "
                                      "running job's rules (role admin)")
async def apply_job(spec: JobSpec, principal: Creator, clients: Clients, response: Response, http: Request
                    ) -> OperationResult:
    """``canaryctl apply``: the spec names the job and its namespace."""
    spec = await strictly(http, JobSpec, spec) or spec
    return await _apply(await clients.get(), spec, principal, response)


@router.put(JOB, response_model=OperationResult, tags=["jobs"], responses=APPLY, status_code=201,
            summary="Create or replace the job at this address (role admin)")
async def put_job(namespace: Namespace, name: JobName, spec: JobSpec, principal: Creator, clients: Clients,
                  response: Response, http: Request) -> OperationResult:
    """The spec may leave out its namespace (the path's is used); a different name or namespace is a 422."""
    spec = await strictly(http, JobSpec, spec) or spec
    if spec.name != name:
        raise invalid("name", f"the body names job {spec.name!r}, the path {name!r}")
    if "namespace" not in spec.model_fields_set:
        spec = spec.model_copy(update={"namespace": namespace})
    elif spec.namespace != namespace:
        raise invalid("namespace", f"the body says namespace {spec.namespace!r}, the path {namespace!r}")
    return await _apply(await clients.get(), spec, principal, response)


async def _operate(temporal: Client, namespace: str, name: str, operation: str, request: OperationRequest | None,
                   principal: Principal) -> OperationResult:
    # The actor is who holds the token, whatever the body claims: the job's history must not lie.
    request = (request or OperationRequest()).model_copy(update={"actor": principal.name})
    log.info("%s: %s on canary job %s/%s", principal.name, operation, namespace, name)
    result = await canary.operate(temporal, namespace, name, operation, request)
    if not result.accepted:
        raise ApiError(ErrorCode.CONFLICT, f"{operation} not accepted: {result.message}")
    return result


def _op_summary(text: str, operation: str) -> str:
    return f"{text} (role {OPERATION_ROLES[operation].label})"


@router.post(f"{JOB}/{names.UPDATE_VERSION}", response_model=OperationResult, tags=["operations"],
             responses=WRITE, summary=_op_summary("Set a new image: a release starts", names.UPDATE_VERSION))
async def update_version(namespace: Namespace, name: JobName, request: UpdateVersionRequest,
                         principal: UpdateVersionActor, clients: Clients, http: Request) -> OperationResult:
    """``canaryctl set-image``."""
    request = await strictly(http, UpdateVersionRequest, request) or request
    return await _operate(await clients.get(), namespace, name, names.UPDATE_VERSION, request, principal)


@router.post(f"{JOB}/{names.CONTINUE}", response_model=OperationResult, tags=["operations"], responses=WRITE,
             summary=_op_summary("End the current pause", names.CONTINUE))
async def continue_release(namespace: Namespace, name: JobName, principal: ContinueActor, clients: Clients,
                           http: Request, request: OptionalRequest = None) -> OperationResult:
    """``canaryctl continue``; the body is optional."""
    request = await strictly(http, OperationRequest, request)
    return await _operate(await clients.get(), namespace, name, names.CONTINUE, request, principal)


@router.post(f"{JOB}/{names.PROMOTE}", response_model=OperationResult, tags=["operations"], responses=WRITE,
             summary=_op_summary("Skip the remaining steps and promote now", names.PROMOTE))
async def promote(namespace: Namespace, name: JobName, principal: PromoteActor, clients: Clients,
                  http: Request, request: OptionalRequest = None) -> OperationResult:
    """``canaryctl promote``; the body is optional."""
    request = await strictly(http, OperationRequest, request)
    return await _operate(await clients.get(), namespace, name, names.PROMOTE, request, principal)


@router.post(f"{JOB}/{names.TERMINATE}", response_model=OperationResult, tags=["operations"], responses=WRITE,
             summary=_op_summary("Abort the release: all traffic back to stable", names.TERMINATE))
async def terminate(namespace: Namespace, name: JobName, principal: TerminateActor, clients: Clients,
                    http: Request, request: OptionalRequest = None) -> OperationResult:
    """``canaryctl terminate``; ``reason`` is kept in the job's history."""
    request = await strictly(http, OperationRequest, request)
    return await _operate(await clients.get(), namespace, name, names.TERMINATE, request, principal)


@router.post(f"{JOB}/{names.ROLLBACK}", response_model=OperationResult, tags=["operations"], responses=WRITE,
             summary=_op_summary("Deliver a historical revision again (skipSteps: at once)", names.ROLLBACK))
async def rollback(namespace: Namespace, name: JobName, request: RollbackRequest, principal: RollbackActor,
                   clients: Clients, http: Request) -> OperationResult:
    """``canaryctl rollback``."""
    request = await strictly(http, RollbackRequest, request) or request
    return await _operate(await clients.get(), namespace, name, names.ROLLBACK, request, principal)


@router.post(f"{JOB}/{names.UPDATE_RULES}", response_model=OperationResult, tags=["operations"],
             responses=WRITE, summary=_op_summary("Replace the steps and traffic policy", names.UPDATE_RULES))
async def update_rules(namespace: Namespace, name: JobName, request: UpdateRulesRequest,
                       principal: UpdateRulesActor, clients: Clients, http: Request) -> OperationResult:
    """``canaryctl update-rules``; the rules are checked here too, so a 422 names the field at fault."""
    request = await strictly(http, UpdateRulesRequest, request) or request
    try:
        rules = DeliveryRules.model_validate_json(json.dumps(request.rules), strict=True)
    except ValidationError as err:
        raise _validation_error(field_errors(err.errors(), "rules")) from None
    request = request.model_copy(update={"rules": rules.model_dump(mode="json", by_alias=True)})
    return await _operate(await clients.get(), namespace, name, names.UPDATE_RULES, request, principal)


@router.post(f"{JOB}/{names.DELETE}", response_model=OperationResult, tags=["operations"], responses=WRITE,
             summary=_op_summary("Give the Deployment back and end the job", names.DELETE))
async def delete(namespace: Namespace, name: JobName, principal: DeleteActor, clients: Clients,
                 http: Request, request: OptionalRequest = None) -> OperationResult:
    """``canaryctl delete``; the body is optional."""
    request = await strictly(http, OperationRequest, request)
    return await _operate(await clients.get(), namespace, name, names.DELETE, request, principal)


@router.delete(JOB, response_model=OperationResult, tags=["jobs"], responses=WRITE,
               summary=_op_summary("Delete the job (same as POST .../delete)", names.DELETE))
async def delete_job(namespace: Namespace, name: JobName, principal: DeleteActor, clients: Clients
                     ) -> OperationResult:
    """The REST form of ``delete``, for clients that expect DELETE on the resource."""
    return await _operate(await clients.get(), namespace, name, names.DELETE, None, principal)


# -- error handling ----------------------------------------------------------------------------


def error_response(error: ApiError) -> JSONResponse:
    """The JSON response for an :class:`ApiError`."""
    return JSONResponse(error.body().model_dump(mode="json"), status_code=error.status, headers=error.headers)


_HTTP_CODES = {400: ErrorCode.BAD_REQUEST, 401: ErrorCode.UNAUTHORIZED, 403: ErrorCode.FORBIDDEN,
               404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED, 409: ErrorCode.CONFLICT,
               422: ErrorCode.INVALID, 503: ErrorCode.UNAVAILABLE}


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path.

    Starlette's own 405 names only the first route that matched the path, but FastAPI has one
    route per method, so GET, PUT and DELETE on a job would be announced as just GET.
    """
    methods: set[str] = set()
    for route in request.app.router.routes:
        # No route serves this method: a route whose path matches answers PARTIAL.
        match, _ = route.matches({**request.scope, "method": "-"})
        route_methods = getattr(route, "methods", None)
        if match == Match.PARTIAL and route_methods:
            methods |= set(route_methods)
    return sorted(methods)


def _install_error_handlers(app: FastAPI) -> None:
    async def on_api_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, ApiError)
        return error_response(error)

    async def on_canary_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, CanaryError)
        api_error = classify(error)
        if api_error.status >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, api_error.message)
        return error_response(api_error)

    async def on_validation_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        problems = list(error.errors())
        if any(p.get("type") == "json_invalid" for p in problems):
            reason = next(str(p.get("msg")) for p in problems if p.get("type") == "json_invalid")
            return error_response(ApiError(ErrorCode.BAD_REQUEST, f"the body is not valid JSON: {reason}",
                                           [FieldError(field="body", reason=reason)]))
        return error_response(_validation_error(field_errors(problems)))

    async def on_http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, StarletteHTTPException)
        code = _HTTP_CODES.get(error.status_code, ErrorCode.BAD_REQUEST)
        message = str(error.detail) if error.detail else code.value
        body = ApiError(code, message).body().model_copy(update={"status": error.status_code})
        headers = dict(error.headers or {})
        if error.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return JSONResponse(body.model_dump(mode="json"), status_code=error.status_code, headers=headers)

    async def on_unexpected(request: Request, error: Exception) -> Response:
        # A Temporal RPC failure that escaped the client's own mapping still means "unavailable";
        # anything else is a bug: logged with its traceback here, never sent to the caller.
        if isinstance(error, RPCError):
            return error_response(ApiError(ErrorCode.UNAVAILABLE, f"Temporal: {error.message}"))
        log.exception("%s %s failed", request.method, request.url.path)
        body = {"status": 500, "code": "internal", "message": "internal error; the server log has the details",
                "field": None, "reason": "internal error", "errors": []}
        return JSONResponse(body, status_code=500)

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(CanaryError, on_canary_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
