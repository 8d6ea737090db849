"""Signing in and out of the page, without a browser: redirects, the cookie, what a stranger gets."""

from __future__ import annotations

import httpx
import pytest

from tests.web.conftest import TOKENS, ApiServer

pytestmark = pytest.mark.cluster


async def test_pages_need_a_session_and_the_cookie_is_safe(api_server: ApiServer) -> None:
    async with httpx.AsyncClient(base_url=api_server.url) as http:
        root = await http.get("/")
        assert root.status_code == 303 and root.headers["location"] == "/ui/jobs"
        jobs = await http.get("/ui/jobs?namespace=shop")
        assert jobs.status_code == 303 and jobs.headers["location"] == "/ui/login?next=/ui/jobs%3Fnamespace%3Dshop"
        live = await http.get("/ui/namespaces/shop/jobs/web/live")
        assert live.status_code == 401 and live.json()["code"] == "unauthorized"

        origin = {"Origin": api_server.url}  # a browser's form post names the page's site
        wrong = await http.post("/ui/login", data={"token": "nope", "next": "/ui/jobs"}, headers=origin)
        assert wrong.status_code == 401 and "unknown token" in wrong.text
        assert "set-cookie" not in wrong.headers

        # Never a redirect to another site after signing in.
        signed = await http.post("/ui/login", data={"token": TOKENS["viewer"][0], "next": "https://evil.example/"},
                                 headers=origin)
        assert signed.status_code == 303 and signed.headers["location"] == "/ui/jobs"
        cookie = signed.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
        assert TOKENS["viewer"][0].lower() not in cookie  # a session id, not the token
        jobs = await http.get("/ui/jobs")
        assert jobs.status_code == 200 and "victor-viewer" in jobs.text
        for phase in ("workload-missing", "error"):  # the phases that wait for the cluster are filters too
            filtered = await http.get("/ui/jobs", params={"status": phase})
            assert filtered.status_code == 200 and f'<option value="{phase}" selected>' in filtered.text
        missing = await http.get("/ui/namespaces/nowhere/jobs/ghost")
        assert missing.status_code == 404 and "no canary job nowhere/ghost" in missing.text

        out = await http.post("/ui/logout", headers=origin)
        assert out.status_code == 303 and out.headers["location"] == "/ui/login"
        assert (await http.get("/ui/jobs")).status_code == 303
