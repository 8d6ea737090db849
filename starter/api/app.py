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
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from temporalio.service import RPCError

from starter import client as canary
from starter.api.auth import OPERATION_ROLES, Principal, TokenStore
from starter.api.deps import ClientFactory, ClientHolder, Creator, JobName, Namespace, Viewer, operator
from starter.api.docs import install_docs
from starter.api.errors import ApiError, ErrorBody, ErrorCode, FieldError, classify, invalid
from starter.api.logs import install_log_redaction
from starter.api.reads import DEFAULT_TTL, JobReads, Reads, SharedReads
from starter.api.security import SecurityHeaders
from starter.api.sessions import SessionStore
from starter.api.web import install_web
from starter.client import JobSummary
from starter.errors import CanaryError
from workflows import names
from workflows.fields import NAME_PATTERN
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
from workflows.spec import DeliveryRules, JobSpec, field_path

log = logging.getLogger("canary.api")

API_PREFIX = "/api/v1"

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description} for status, description in [
        (400, "the body is not JSON"),
        (401, "no token, or an unknown one"),
        (403, "the token's role may not do this"),
        (404, "no such job"),
        (409, "the job's state does not allow this now (for continue and promote: also when the release "
              "or step named is no longer the current one)"),
        (422, "an input field is invalid; `field` names it"),
        (503, "Temporal, the canary worker or Kubernetes cannot be reached"),
    ]
}
# What the operation models' gate fields mean, for the OpenAPI document.
GATE_FIELDS = {
    "release": "The release (the canary's revision) the caller means. continue and promote: left out "
               "together with `step`, the job's current release and step are read first and sent, so a "
               "request that arrives after that gate was passed is refused (409) instead of opening the next.",
    "step": "The step (1-based, as shown) the caller means; refused (409) when no longer current.",
}


class Health(BaseModel):
    """Answer of the probes."""

    status: str
    temporal: str | None = None


class WhoAmI(BaseModel):
    """The caller as the API sees it: the name recorded as actor, and the role."""

    name: str
    role: str


# -- validation helpers ------------------------------------------------------------------------

_LOCATIONS = ("body", "path", "query", "header", "cookie")


def field_errors(errors: Sequence[Any], prefix: str = "") -> list[FieldError]:
    """Pydantic's error list as field/reason pairs, fields named as the user writes them."""
    result = []
    for problem in errors:
        loc = tuple(problem.get("loc", ()))
        path = field_path(loc[1:] if loc[:1] and loc[0] in _LOCATIONS else loc)
        path = path or ("body" if loc[:1] == ("body",) else "")
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


def create_app(client_factory: ClientFactory, tokens: TokenStore, *, web: bool = True,
               read_ttl: float = DEFAULT_TTL) -> FastAPI:
    """The API (and, unless ``web`` is False, the web page) over one lazily connected client.

    ``read_ttl``: how long an answer from a job is shared by later readers (starter.api.reads).
    """
    app = FastAPI(
        title="canary-delivery API",
        version=_version(),
        description="Start and steer canary delivery jobs. Every job is a durable Temporal workflow; "
                    "these endpoints call the same updates and queries as `canaryctl`. Authenticate with "
                    "`Authorization: Bearer <token>`; the token's name is recorded as the actor of "
                    "every operation.",
        # Served by starter.api.docs from the swagger-ui-bundle wheel; FastAPI's own pages use a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.clients = ClientHolder(client_factory)
    app.state.reads = JobReads(app.state.clients, SharedReads(read_ttl))
    app.state.tokens = tokens
    app.state.sessions = SessionStore()
    install_log_redaction()
    app.add_middleware(SecurityHeaders)
    _install_error_handlers(app)
    app.include_router(router)
    install_docs(app)
    if web:
        install_web(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with the gate fields of the operation models described."""
    if app.openapi_schema is None:
        document = get_openapi(title=app.title, version=app.version, description=app.description,
                               routes=app.routes)
        for schema in document.get("components", {}).get("schemas", {}).values():
            for field, text in GATE_FIELDS.items():
                if field in schema.get("properties", {}):
                    schema["properties"][field]["description"] = text
        app.openapi_schema = document
    return app.openapi_schema


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
async def list_jobs(_: Viewer, reads: Reads, namespace: NamespaceFilter = None, status: Status = None,
                    include_ended: IncludeEnded = False) -> list[JobSummary]:
    """Jobs as Temporal's visibility store knows them (eventually consistent)."""
    return await reads.jobs(namespace, status.value if status else None, include_ended)


@router.get(f"{API_PREFIX}/namespaces/{{namespace}}/jobs", response_model=list[JobSummary], tags=["jobs"],
            responses=READ, summary="List the jobs of one namespace")
async def list_namespace_jobs(namespace: Namespace, _: Viewer, reads: Reads, status: Status = None,
                              include_ended: IncludeEnded = False) -> list[JobSummary]:
    """The same list, addressed like the job resources below it."""
    return await reads.jobs(namespace, status.value if status else None, include_ended)


@router.get(JOB, response_model=JobDetails, tags=["jobs"], responses=READ_JOB,
            summary="A job's details: phase, steps, weight, main version, recent events")
async def get_job(namespace: Namespace, name: JobName, _: Viewer, reads: Reads) -> JobDetails:
    """The workflow's ``details`` query (shared by concurrent readers: see starter.api.reads)."""
    return await reads.details(namespace, name)


@router.get(f"{JOB}/versions", response_model=JobVersions, tags=["jobs"], responses=READ_JOB,
            summary="A job's main version (stable, canary) and historical versions")
async def get_versions(namespace: Namespace, name: JobName, _: Viewer, reads: Reads) -> JobVersions:
    """The workflow's ``versions`` query (shared by concurrent readers: see starter.api.reads)."""
    return await reads.versions(namespace, name)


async def _apply(reads: JobReads, spec: JobSpec, principal: Principal, response: Response) -> OperationResult:
    temporal = await reads.clients.get()
    log.info("%s applies canary job %s/%s", principal.name, spec.namespace, spec.name)
    try:
        applied = await canary.apply_job(temporal, spec, actor=principal.name)
    finally:
        reads.changed()  # whatever happened, nobody reads what was before it
    response.status_code = 201 if applied.created else 200
    job = await canary.details(temporal, spec.namespace, spec.name)
    return OperationResult(message=applied.message, phase=job.phase)


@router.post(f"{API_PREFIX}/jobs", response_model=OperationResult, tags=["jobs"], responses=APPLY,
             status_code=201, summary="Create a job from its spec (starts its workflow), or replace a "
                                      "running job's rules (role admin)")
async def apply_job(spec: JobSpec, principal: Creator, reads: Reads, response: Response, http: Request
                    ) -> OperationResult:
    """``canaryctl apply``: the spec names the job and its namespace."""
    spec = await strictly(http, JobSpec, spec) or spec
    return await _apply(reads, spec, principal, response)


@router.put(JOB, response_model=OperationResult, tags=["jobs"], responses=APPLY, status_code=201,
            summary="Create or replace the job at this address (role admin)")
async def put_job(namespace: Namespace, name: JobName, spec: JobSpec, principal: Creator, reads: Reads,
                  response: Response, http: Request) -> OperationResult:
    """The spec may leave out its namespace (the path's is used); a different name or namespace is a 422."""
    spec = await strictly(http, JobSpec, spec) or spec
    if spec.name != name:
        raise invalid("name", f"the body names job {spec.name!r}, the path {name!r}")
    if "namespace" not in spec.model_fields_set:
        spec = spec.model_copy(update={"namespace": namespace})
    elif spec.namespace != namespace:
        raise invalid("namespace", f"the body says namespace {spec.namespace!r}, the path {namespace!r}")
    return await _apply(reads, spec, principal, response)


async def _operate(reads: JobReads, namespace: str, name: str, operation: str, request: OperationRequest | None,
                   principal: Principal) -> OperationResult:
    temporal = await reads.clients.get()
    # The actor is who holds the token, whatever the body claims: the job's history must not lie.
    request = (request or OperationRequest()).model_copy(update={"actor": principal.name})
    log.info("%s: %s on canary job %s/%s", principal.name, operation, namespace, name)
    try:
        return await canary.operate(temporal, namespace, name, operation, request)
    finally:
        reads.changed()  # the caller's next read shows the operation (a refused one changed nothing, but cheaply)


def _checked_rules(request: UpdateRulesRequest) -> UpdateRulesRequest:
    """The rules are checked here too, so a 422 names the field at fault before the job is asked."""
    try:
        rules = DeliveryRules.model_validate_json(json.dumps(request.rules), strict=True)
    except ValidationError as err:
        raise _validation_error(field_errors(err.errors(), "rules")) from None
    return request.model_copy(update={"rules": rules.model_dump(mode="json", by_alias=True)})


@dataclass(frozen=True)
class _Operation:
    """One ``POST .../jobs/{name}/<operation>`` route: its body model and what it says in the docs."""

    name: str
    model: type[OperationRequest]
    summary: str
    description: str
    optional_body: bool = False
    check: Callable[[Any], OperationRequest] | None = None


_GATE_NOTE = (" The body may name the `release` and `step` meant; without them the job's current ones are "
              "read and sent, so a repeated or late request never passes a later gate: it is refused (409).")
OPERATIONS = [
    _Operation(names.UPDATE_VERSION, UpdateVersionRequest, "Set a new image: a release starts",
               "``canaryctl set-image``."),
    _Operation(names.CONTINUE, OperationRequest, "End the current pause",
               "``canaryctl continue``; the body is optional." + _GATE_NOTE, optional_body=True),
    _Operation(names.PROMOTE, OperationRequest, "Skip the remaining steps and promote now",
               "``canaryctl promote``; the body is optional." + _GATE_NOTE, optional_body=True),
    _Operation(names.TERMINATE, OperationRequest, "Abort the release: all traffic back to stable",
               "``canaryctl terminate``; ``reason`` is kept in the job's history.", optional_body=True),
    _Operation(names.ROLLBACK, RollbackRequest, "Deliver a historical revision again (skipSteps: at once)",
               "``canaryctl rollback``."),
    _Operation(names.UPDATE_RULES, UpdateRulesRequest, "Replace the steps and traffic policy",
               "``canaryctl update-rules``; the rules are checked here too, so a 422 names the field at fault.",
               check=_checked_rules),
    _Operation(names.DELETE, OperationRequest, "Give the Deployment back and end the job",
               "``canaryctl delete``; the body is optional.", optional_body=True),
]


def _add_operation(op: _Operation) -> None:
    """Register the route of one operation: authenticate, validate strictly, stamp the actor, run."""
    Actor = Annotated[Principal, operator(op.name)]  # noqa: N806

    async def run(namespace: str, name: str, principal: Principal, reads: JobReads, http: Request,
                  request: OperationRequest | None) -> OperationResult:
        request = await strictly(http, op.model, request)
        if request is not None and op.check is not None:
            request = op.check(request)
        return await _operate(reads, namespace, name, op.name, request, principal)

    Model = op.model  # noqa: N806  (a type, used as one)
    Optional = Annotated[Model | None, Body()]  # type: ignore[valid-type]  # noqa: N806

    async def without_body(namespace: Namespace, name: JobName, principal: Actor, reads: Reads,
                           http: Request, request: Optional = None) -> OperationResult:
        return await run(namespace, name, principal, reads, http, request)

    async def with_body(namespace: Namespace, name: JobName, request: Model,  # type: ignore[valid-type]
                        principal: Actor, reads: Reads, http: Request) -> OperationResult:
        return await run(namespace, name, principal, reads, http, request)

    route: Callable[..., Awaitable[OperationResult]] = without_body if op.optional_body else with_body
    router.add_api_route(
        f"{JOB}/{op.name}", route, methods=["POST"], name=op.name.replace("-", "_"), response_model=OperationResult,
        tags=["operations"], responses=WRITE, description=op.description,
        summary=f"{op.summary} (role {OPERATION_ROLES[op.name].label})")


for _op in OPERATIONS:
    _add_operation(_op)


DeleteActor = Annotated[Principal, operator(names.DELETE)]


@router.delete(JOB, response_model=OperationResult, tags=["jobs"], responses=WRITE,
               summary=f"Delete the job (same as POST .../delete) (role {OPERATION_ROLES[names.DELETE].label})")
async def delete_job(namespace: Namespace, name: JobName, principal: DeleteActor, reads: Reads
                     ) -> OperationResult:
    """The REST form of ``delete``, for clients that expect DELETE on the resource."""
    return await _operate(reads, namespace, name, names.DELETE, None, principal)


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
