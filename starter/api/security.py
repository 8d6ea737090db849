"""What keeps another site from acting through a signed-in browser, and the page from being framed.

Two defences, both needed because the page authenticates with a cookie, which the browser
sends whoever made the request:

* :func:`require_same_origin`: a state-changing request that a cookie authenticates (sign-in,
  sign-out, an operation from the page) must say it comes from this site. Browsers send
  ``Origin`` on every POST (``Referer`` is the fallback); a request that names another site,
  ``null`` (a sandboxed frame), or neither is refused with 403. Bearer-token requests need no
  such check: no other site can make a browser send the token.
* :class:`SecurityHeaders`: every response forbids framing (clickjacking of the confirm
  dialogs), inline and foreign script (the page has none; its script and style are static
  files), MIME sniffing, and a Referer to other sites.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from starter.api.errors import ApiError, ErrorCode

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


def _source(request: Request) -> str | None:
    """Where the browser says the request comes from: ``Origin``, else ``Referer``."""
    origin = request.headers.get("origin")
    if origin is not None:
        return origin
    return request.headers.get("referer")


def is_same_origin(request: Request) -> bool:
    """True when the request's ``Origin`` (or ``Referer``) is this very host and port.

    Compared with the ``Host`` the request was sent to, so it holds behind a proxy that keeps
    the host; a scheme difference alone cannot occur on one host and port.
    """
    source = _source(request)
    host = request.headers.get("host")
    if not source or not host or source == "null":
        return False
    parts = urlsplit(source)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


def require_same_origin(request: Request) -> None:
    """Refuse (403) a state-changing cookie-authenticated request from another site."""
    if request.method in SAFE_METHODS or is_same_origin(request):
        return
    source = _source(request)
    said = f"it comes from {source}" if source else "it names no Origin or Referer"
    raise ApiError(ErrorCode.FORBIDDEN, f"cross-site request refused: {said}, not this site")


class SecurityHeaders:
    """ASGI middleware: adds :data:`HEADERS` to every HTTP response (unless a route set its own)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; add the headers to the response's start message on its way out."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in HEADERS if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
