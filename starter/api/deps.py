"""What the API's routes and the web page's routes both depend on: the client, the caller, path types.

Kept apart from both so that neither imports the other: the app installs the page, and the
page needs only these.
"""

# No `from __future__ import annotations`: FastAPI reads the annotations at run time.

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from temporalio.client import Client

from starter.api.auth import CREATE_ROLE, OPERATION_ROLES, Principal, Role, TokenStore
from starter.api.errors import ApiError, ErrorCode
from starter.api.security import require_same_origin
from starter.api.sessions import SessionStore
from starter.errors import CanaryError
from workflows.fields import NAME_PATTERN

ClientFactory = Callable[[], Awaitable[Client]]

# The web page's session id (never the token: see starter.api.sessions); HttpOnly, SameSite=Strict.
SESSION_COOKIE = "canary_session"
# A cookie alone never authenticates an API call: the page's scripts also send this header,
# which a cross-site form cannot, and no CORS is configured that would let another site do so;
# a state-changing call must also come from this site's Origin (starter.api.security).
WEB_HEADER = "X-Requested-With"
WEB_HEADER_VALUE = "canary-web"

Namespace = Annotated[str, Path(pattern=NAME_PATTERN, max_length=63, description="Kubernetes namespace of the job")]
JobName = Annotated[str, Path(pattern=NAME_PATTERN, max_length=40, description="name of the canary job")]


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


def clients(request: Request) -> ClientHolder:
    """The app's one client holder."""
    holder: ClientHolder = request.app.state.clients
    return holder


def tokens(request: Request) -> TokenStore:
    """The app's configured tokens."""
    store: TokenStore = request.app.state.tokens
    return store


def sessions(request: Request) -> SessionStore:
    """The app's sign-in sessions (the web page's)."""
    store: SessionStore = request.app.state.sessions
    return store


# -- authentication ----------------------------------------------------------------------------

bearer = HTTPBearer(auto_error=False, scheme_name="bearer",
                    description="A token configured by the operator; its role decides what it may do.")


def authenticate(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    """The bearer token's holder, or the page's signed-in user.

    The session cookie counts only with the page's header, and for a call that changes
    something only from this site's Origin: a cookie is sent whoever made the request.
    """
    token = credentials.credentials if credentials is not None else None
    if token is None:
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie and request.headers.get(WEB_HEADER) == WEB_HEADER_VALUE:
            require_same_origin(request)
            signed_in = sessions(request).find(cookie)
            if signed_in is None:
                raise ApiError(ErrorCode.UNAUTHORIZED, "signed out or session expired: sign in again")
            return signed_in
    if not token:
        raise ApiError(ErrorCode.UNAUTHORIZED, "a bearer token is required (Authorization: Bearer <token>)",
                       headers={"WWW-Authenticate": "Bearer"})
    principal = tokens(request).find(token)
    if principal is None:
        raise ApiError(ErrorCode.UNAUTHORIZED, "unknown token",
                       headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return principal


def require(role: Role, what: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that authenticates the caller and checks that its role may do ``what``.

    ``async`` although it never awaits: FastAPI runs a plain function dependency on a worker
    thread, a hop per request that 200 concurrent requests queue for (40 threads).
    """

    async def dependency(request: Request,
                         credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
        principal = authenticate(request, credentials)
        if principal.role < role:
            raise ApiError(ErrorCode.FORBIDDEN,
                           f"{principal.name} has role {principal.role.label}; {what} needs role {role.label}")
        return principal

    return dependency


def operator(operation: str) -> Any:
    """The dependency for one operation: the role it needs (see ``OPERATION_ROLES``)."""
    return Depends(require(OPERATION_ROLES[operation], operation))


Viewer = Annotated[Principal, Depends(require(Role.VIEWER, "reading jobs"))]
Creator = Annotated[Principal, Depends(require(CREATE_ROLE, "creating or replacing a job"))]
