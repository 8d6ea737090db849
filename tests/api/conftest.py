"""The HTTP API on a real port, over the e2e fixtures: dev server, real worker, real local cluster.

The app runs in uvicorn on its own thread with its own event loop and its own Temporal client,
as it would in production; tests talk to it over real HTTP (the browser tests need a real
port anyway). Tests must be ``async`` and await while they wait: the worker runs on the
session's event loop, which only turns while a test awaits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
import pytest_asyncio
import uvicorn
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from devenv.processes import free_port
from starter import client as canary
from starter.api.app import create_app
from starter.api.auth import Principal, Role, TokenStore
from tests.e2e.conftest import Shop, dev_server, mesh_metrics, shop, temporal, until  # noqa: F401  (fixtures and helpers)

# role -> (token, name recorded as actor)
TOKENS: dict[str, tuple[str, str]] = {
    "admin": ("admin-token-0123456789", "alice-admin"),
    "operator": ("operator-token-0123456789", "olivia-operator"),
    "viewer": ("viewer-token-0123456789", "victor-viewer"),
}
# Generous: creating a job waits until the workflow has attached to its Deployment.
HTTP_TIMEOUT = 90.0


def token_store() -> TokenStore:
    return TokenStore([Principal(token=token, role=Role.parse(role), name=name)
                       for role, (token, name) in TOKENS.items()])


@dataclass
class ApiServer:
    url: str
    temporal_address: str

    def client(self, role: str | None = None, *, cookie_role: str | None = None) -> httpx.AsyncClient:
        """A client with the role's bearer token, or (``cookie_role``) signed in like the web page.

        The page's client sends this site's ``Origin`` as a browser does (state-changing
        requests that a cookie authenticates are refused without it); the session comes from
        the sign-in form, since the cookie holds a session id, not the token.
        """
        headers = {"Authorization": f"Bearer {TOKENS[role][0]}"} if role else {}
        cookies = None
        if cookie_role:
            headers["Origin"] = self.url
            signed = httpx.post(f"{self.url}/ui/login", data={"token": TOKENS[cookie_role][0]},
                                headers={"Origin": self.url}, timeout=HTTP_TIMEOUT)
            assert signed.status_code == 303, signed.text
            cookies = {"canary_session": signed.cookies["canary_session"]}
        return httpx.AsyncClient(base_url=self.url, headers=headers, cookies=cookies, timeout=HTTP_TIMEOUT)


@pytest.fixture(scope="session")
def api_server(dev_server: WorkflowEnvironment, temporal: Client) -> Iterator[ApiServer]:  # noqa: F811
    """The app on a free port; ``temporal`` makes sure the session's worker polls."""
    address = str(dev_server.client.service_client.config.target_host)

    async def connect():
        return await canary.connect(address)

    app = create_app(connect, token_store())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, name="canary-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API server did not start")
        time.sleep(0.05)
    yield ApiServer(url=f"http://127.0.0.1:{port}", temporal_address=address)
    server.should_exit = True
    thread.join(timeout=10)


@pytest_asyncio.fixture
async def admin(api_server: ApiServer) -> AsyncIterator[httpx.AsyncClient]:
    async with api_server.client("admin") as http:
        yield http


@pytest_asyncio.fixture
async def operator(api_server: ApiServer) -> AsyncIterator[httpx.AsyncClient]:
    async with api_server.client("operator") as http:
        yield http


@pytest_asyncio.fixture
async def viewer(api_server: ApiServer) -> AsyncIterator[httpx.AsyncClient]:
    async with api_server.client("viewer") as http:
        yield http


def job_url(shop: Shop, suffix: str = "") -> str:  # noqa: F811
    return f"/api/v1/namespaces/{shop.namespace}/jobs/web{suffix}"


def job_body(shop: Shop, **fields: object) -> dict[str, object]:  # noqa: F811
    """A job spec as a CI system would PUT it (the namespace comes from the path)."""
    return {"name": "web", "workload": {"name": "web"},
            "steps": [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {"duration": "2s"}}],
            "progressDeadline": "20s", **fields}
