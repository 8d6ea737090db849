"""The worker's probes: ``/livez`` and ``/readyz`` on a small HTTP listener of its own.

Readiness means the worker can do its job right now: Temporal answers its health check,
the Kubernetes API server answers (with this worker's credentials), and the worker polls
(it has started and is not shutting down). A pod that is not ready is taken out of nothing
(the worker serves no traffic) but shows the operator which dependency is missing, and a
rollout of the chart waits for it. Liveness is only "the event loop answers": restarting a
worker cannot bring Temporal or the API server back.

The listener is plain asyncio, not a web framework: two fixed paths, no request bodies.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from kubernetes import client as k8s
from temporalio.client import Client
from temporalio.worker import Worker

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 3.0
Check = Callable[[], Awaitable[str | None]]  # None when healthy, else why not


@dataclass
class WorkerChecks:
    """What ``/readyz`` asks, each bounded by ``CHECK_TIMEOUT``."""

    temporal: Client
    api: k8s.ApiClient
    worker: Worker

    async def temporal_ok(self) -> str | None:
        """Temporal's frontend answers its gRPC health check."""
        try:
            healthy = await asyncio.wait_for(self.temporal.service_client.check_health(), CHECK_TIMEOUT)
        except Exception as err:  # any failure to answer is "not ready", with its reason
            return f"Temporal does not answer: {type(err).__name__}: {err}"
        return None if healthy else "Temporal reports itself not serving"

    async def kubernetes_ok(self) -> str | None:
        """The API server answers ``/version`` through the worker's own client."""
        try:
            await asyncio.wait_for(asyncio.to_thread(
                k8s.VersionApi(self.api).get_code, _request_timeout=CHECK_TIMEOUT), CHECK_TIMEOUT + 1)
        except Exception as err:  # as above
            return f"Kubernetes API server does not answer: {type(err).__name__}: {err}"
        return None

    async def polling_ok(self) -> str | None:
        """The worker runs its pollers and has not begun shutting down."""
        if self.worker.is_shutdown or not self.worker.is_running:
            return "the worker is not polling (starting or shutting down)"
        return None

    async def ready(self) -> dict[str, str]:
        """Every check's answer: ``ok`` or why not."""
        names = ("temporal", "kubernetes", "polling")
        results = await asyncio.gather(self.temporal_ok(), self.kubernetes_ok(), self.polling_ok())
        return {name: result or "ok" for name, result in zip(names, results, strict=True)}


class HealthServer:
    """Serves ``GET /livez`` and ``GET /readyz`` for ``checks`` on ``host:port``."""

    def __init__(self, checks: WorkerChecks, host: str, port: int) -> None:
        self._checks, self._host, self._port = checks, host, port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        """Listen; returns once bound."""
        self._server = await asyncio.start_server(self._handle, self._host, self._port)

    async def stop(self) -> None:
        """Stop listening and close the connections."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request.decode("latin-1").split()
            path = parts[1] if len(parts) >= 2 and parts[0] == "GET" else None
            status, body = await self._answer(path)
            payload = json.dumps(body).encode()
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}"
                         "\r\nConnection: close\r\n\r\n".encode() + payload)
            await writer.drain()
        except (TimeoutError, ConnectionError) as err:
            log.debug("health request dropped: %s", err)
        finally:
            writer.close()

    async def _answer(self, path: str | None) -> tuple[str, dict[str, object]]:
        if path == "/livez":
            return "200 OK", {"status": "ok"}
        if path == "/readyz":
            checks = await self._checks.ready()
            ok = all(value == "ok" for value in checks.values())
            return ("200 OK" if ok else "503 Service Unavailable"), {"status": "ok" if ok else "not ready", **checks}
        return "404 Not Found", {"status": "not found", "paths": ["/livez", "/readyz"]}
