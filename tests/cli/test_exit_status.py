"""Entry points exit with the status of their work, never an abort at interpreter shutdown.

Before :mod:`starter.lifecycle`, a command that had talked to Temporal died at exit with
"Fatal Python error: PyGILState_Release" (exit 134) in about one run of two.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from devenv.processes import free_port
from tests.cli.helpers import ROOT, canaryctl, crashed
from tests.temporal_envs import local_env

RUNS = 12


@pytest_asyncio.fixture(scope="module")
async def temporal_address() -> AsyncIterator[str]:
    async with await local_env() as env:
        yield str(env.client.service_client.config.target_host)


def test_cli_exit_status_is_its_commands_every_time(temporal_address: str) -> None:
    outcomes = []
    for _ in range(RUNS):
        listed = canaryctl("list", "--address", temporal_address, "-o", "json")
        missing = canaryctl("get", "nope", "-n", "shop", "--address", temporal_address)
        outcomes.append((listed.returncode, missing.returncode))
        assert not crashed(listed) and not crashed(missing), (listed.stderr, missing.stderr)
        assert listed.stdout.strip() == "[]"
        assert missing.stderr.strip() == "error: no canary job shop/nope"
    assert outcomes == [(0, 1)] * RUNS


def test_api_server_stops_cleanly_on_sigterm(temporal_address: str) -> None:
    """uvicorn re-raises the SIGTERM it handled once it has shut down: -15 is its clean end."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CANARY_API_TOKENS": "t0k3n-for-tests-only:admin:ci"}
    for _ in range(2):
        server = subprocess.Popen(
            [sys.executable, "-m", "starter.api", "--port", str(port), "--address", temporal_address,
             "--log-level", "warning"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _wait_for_port(port, server)
            # One request that uses the Temporal client, so its threads have work to finish.
            import urllib.request
            request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/jobs",
                                             headers={"Authorization": "Bearer t0k3n-for-tests-only"})
            with urllib.request.urlopen(request, timeout=30) as answer:
                assert answer.status == 200
        finally:
            server.send_signal(signal.SIGTERM)
            _, stderr = server.communicate(timeout=60)
        assert server.returncode in (0, -signal.SIGTERM), stderr
        assert "Fatal Python error" not in stderr and "Traceback" not in stderr, stderr


def _wait_for_port(port: int, process: subprocess.Popen[str], timeout: float = 60) -> None:
    import socket
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the API exited at start: {process.communicate()[1]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    pytest.fail("the API did not listen in time")
