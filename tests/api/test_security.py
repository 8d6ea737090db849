"""The page's sessions, cross-site requests and security headers, in process (no Temporal needed)."""

from __future__ import annotations

import pytest

from starter.api.auth import Principal, Role
from starter.api.sessions import SessionStore
from tests.api.conftest import TOKENS
from tests.api.local import BASE_URL, local_app, local_client, sign_in

EVIL = "https://evil.example"
WEB = {"X-Requested-With": "canary-web"}
CONTINUE = "/api/v1/namespaces/shop/jobs/web/continue"


async def test_the_cookie_holds_a_session_id_not_the_token() -> None:
    async with local_client(local_app()) as http:
        answer = await http.post("/ui/login", data={"token": TOKENS["admin"][0]}, headers={"Origin": BASE_URL})
        assert answer.status_code == 303
        cookie = answer.headers["set-cookie"]
        session = http.cookies["canary_session"]
        assert TOKENS["admin"][0] not in cookie and session != TOKENS["admin"][0] and len(session) >= 40
        flags = [flag.strip().lower() for flag in cookie.split(";")]
        assert "httponly" in flags and "samesite=strict" in flags and "path=/" in flags
        assert "secure" not in flags  # plain http: a Secure cookie would never come back
        # Two sign-ins are two different sessions.
        assert await sign_in(http, "admin") != session


async def test_the_cookie_is_secure_over_https() -> None:
    async with local_client(local_app(), base_url="https://canary.test") as http:
        answer = await http.post("/ui/login", data={"token": TOKENS["viewer"][0]},
                                 headers={"Origin": "https://canary.test"})
        assert answer.status_code == 303
        assert "secure" in [flag.strip().lower() for flag in answer.headers["set-cookie"].split(";")]


async def test_a_signed_out_session_is_refused_everywhere() -> None:
    app = local_app()
    async with local_client(app) as http:
        session = await sign_in(http, "operator")
        assert (await http.get("/ui/jobs")).status_code == 200
        assert (await http.get("/api/v1/whoami", headers=WEB)).json() == {"name": "olivia-operator",
                                                                           "role": "operator"}
        out = await http.post("/ui/logout", headers={"Origin": BASE_URL})
        assert out.status_code == 303 and out.headers["location"] == "/ui/login"
    # Whoever kept the cookie (a thief, or the browser's history) gets nothing with it.
    async with local_client(app) as stolen:
        stolen.cookies.set("canary_session", session)
        assert (await stolen.get("/ui/jobs")).status_code == 303
        refused = await stolen.get("/api/v1/whoami", headers=WEB)
        assert refused.status_code == 401 and "sign in again" in refused.json()["message"]
        assert (await stolen.get("/ui/namespaces/shop/jobs/web/live")).status_code == 401
        # Nor does the raw token work as a cookie.
        stolen.cookies.set("canary_session", TOKENS["operator"][0])
        assert (await stolen.get("/api/v1/whoami", headers=WEB)).status_code == 401


async def test_sessions_are_forgotten_by_a_restart() -> None:
    async with local_client(local_app()) as http:
        session = await sign_in(http, "viewer")
    async with local_client(local_app()) as restarted:
        restarted.cookies.set("canary_session", session)
        assert (await restarted.get("/ui/jobs")).status_code == 303


def test_sessions_expire_and_are_bounded() -> None:
    now = [1000.0]
    store = SessionStore(lifetime=60, clock=lambda: now[0], limit=3)
    alice = Principal(token="alice-token-123", role=Role.ADMIN, name="alice")
    first = store.create(alice)
    assert store.find(first) == alice
    now[0] += 59
    assert store.find(first) == alice
    now[0] += 1
    assert store.find(first) is None and len(store) == 0
    ids = [store.create(alice) for _ in range(4)]
    assert len(store) == 3 and store.find(ids[0]) is None and store.find(ids[3]) == alice
    store.revoke(ids[3])
    assert store.find(ids[3]) is None and store.find(ids[2]) == alice


@pytest.mark.parametrize("headers", [
    {"Origin": EVIL},
    {"Origin": "null"},
    {"Origin": "http://canary.test.evil.example"},
    {"Referer": f"{EVIL}/page"},
    {},  # neither Origin nor Referer: a browser always sends one on a POST
])
async def test_cross_site_posts_with_the_cookie_are_refused(headers: dict[str, str]) -> None:
    app = local_app()
    async with local_client(app) as http:
        session = await sign_in(http, "admin")
        login = await http.post("/ui/login", data={"token": TOKENS["viewer"][0]}, headers=headers)
        assert login.status_code == 403 and "cross-site request refused" in login.json()["message"]
        assert "set-cookie" not in login.headers
        operation = await http.post(CONTINUE, json={}, headers={**WEB, **headers})
        assert operation.status_code == 403 and operation.json()["code"] == "forbidden"
        logout = await http.post("/ui/logout", headers=headers)
        assert logout.status_code == 403
        # The session is still the admin's: neither the forged sign-in nor the forged sign-out took.
        assert http.cookies["canary_session"] == session
        assert (await http.get("/api/v1/whoami", headers=WEB)).json()["role"] == "admin"


async def test_same_site_posts_pass_the_origin_check() -> None:
    async with local_client(local_app()) as http:
        await sign_in(http, "operator")
        for headers in ({"Origin": BASE_URL}, {"Referer": f"{BASE_URL}/ui/namespaces/shop/jobs/web"}):
            # Past authentication and the origin check, the operation needs Temporal: 503 here.
            answer = await http.post(CONTINUE, json={}, headers={**WEB, **headers})
            assert answer.status_code == 503, answer.text
    # A bearer token needs no Origin: no other site can make a browser send it.
    async with local_client(local_app(), "operator") as bearer:
        assert (await bearer.post(CONTINUE, json={})).status_code == 503


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/ui/login"), ("GET", "/ui/jobs"), ("GET", "/api/v1/whoami"), ("GET", "/api/v1/jobs"),
    ("GET", "/docs"), ("GET", "/openapi.json"), ("GET", "/healthz"), ("GET", "/ui/static/app.js"),
    ("POST", "/ui/login"), ("GET", "/nowhere"),
])
async def test_every_response_carries_the_security_headers(method: str, path: str) -> None:
    async with local_client(local_app()) as http:
        answer = await http.request(method, path)
    csp = answer.headers["content-security-policy"]
    directives = dict(part.strip().partition(" ")[::2] for part in csp.split(";"))
    assert directives["script-src"] == "'self'" and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert directives["frame-ancestors"] == "'none'" and directives["default-src"] == "'self'"
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "same-origin"


async def test_pages_have_no_inline_script_or_style() -> None:
    async with local_client(local_app()) as http:
        await sign_in(http, "viewer")
        for path in ("/ui/login", "/ui/jobs", "/docs"):
            text = (await http.get(path)).text
            assert "<script>" not in text and "<style" not in text and " style=" not in text, path
            assert "cdn" not in text.lower(), path
        for path in ("/docs/start.js", "/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"):
            assert (await http.get(path)).status_code == 200, path


async def test_the_docs_page_has_no_redoc_from_a_cdn() -> None:
    async with local_client(local_app()) as http:
        assert (await http.get("/redoc")).status_code == 404
        page = await http.get("/docs")
    assert 'src="/docs/assets/swagger-ui-bundle.js"' in page.text
