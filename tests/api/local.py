"""The app in process, without Temporal: for what the API decides before it asks a job.

Validation, authentication, sessions, origin checks and response headers all happen before
the Temporal client is first used, so these tests need no cluster and no dev server; a job
endpoint that does get that far answers 503 (the client factory cannot connect).
"""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from temporalio.client import Client

from starter.api.app import create_app
from starter.api.auth import Principal, Role, TokenStore
from starter.errors import Unavailable
from tests.api.conftest import TOKENS

BASE_URL = "http://canary.test"


async def _no_temporal() -> Client:
    raise Unavailable("no Temporal in this test")


def local_app() -> FastAPI:
    """A fresh app (fresh sessions) with the shared test tokens and no Temporal behind it."""
    store = TokenStore([Principal(token=token, role=Role.parse(role), name=name)
                        for role, (token, name) in TOKENS.items()])
    return create_app(_no_temporal, store)


def local_client(app: FastAPI, role: str | None = None, base_url: str = BASE_URL) -> httpx.AsyncClient:
    """An HTTP client talking to ``app`` in process (with the role's bearer token if given)."""
    headers = {"Authorization": f"Bearer {TOKENS[role][0]}"} if role else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url, headers=headers)


async def sign_in(http: httpx.AsyncClient, role: str) -> str:
    """Sign ``http`` in through the page's form, as a browser on this site would; the session id."""
    origin = f"{http.base_url.scheme}://{http.base_url.netloc.decode()}"
    answer = await http.post("/ui/login", data={"token": TOKENS[role][0], "next": "/ui/jobs"},
                             headers={"Origin": origin})
    assert answer.status_code == 303, answer.text
    session = http.cookies.get("canary_session")
    assert session, answer.headers
    return session
