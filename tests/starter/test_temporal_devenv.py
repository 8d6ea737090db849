"""The Temporal dev server and the SDK test environments, from the venv's binaries only."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.contrib.pydantic import pydantic_data_converter

from devenv import temporal as devenv_temporal
from devenv.processes import port_in_use
from devenv.temporal import TemporalDevServer, TemporalError
from tests.temporal_envs import local_env, time_skipping_env
from workflows import search

EXPECTED = {key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for key in search.ALL}


async def custom_attributes(client: Client) -> dict[str, int]:
    response = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace))
    return dict(response.custom_attributes)


async def test_dev_server_start_attributes_ui_and_stop() -> None:
    server = TemporalDevServer()
    server.start()
    try:
        assert server.address == f"127.0.0.1:{server.port}"
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        assert (await custom_attributes(client)).items() >= EXPECTED.items()
        with urllib.request.urlopen(server.ui_url, timeout=5) as response:
            assert response.status == 200
        # The HTTP API that `canaryctl --http-address` uses serves the namespace.
        with urllib.request.urlopen(f"http://{server.http_address}/api/v1/namespaces/default", timeout=5) as response:
            assert json.load(response)["namespaceInfo"]["name"] == "default"
        pid = server.pid
        assert pid is not None
        run_dir = server.run_dir
    finally:
        server.stop()
    assert not Path(f"/proc/{pid}").exists()
    assert not any(port_in_use(port) for port in (server.port, server.ui_port, server.http_port))
    assert not run_dir.exists()


async def test_persistent_database_gains_new_attributes(tmp_path: Path) -> None:
    """An old database keeps its data and still gets attributes added since it was created."""
    db = tmp_path / "temporal.db"
    with TemporalDevServer(db_filename=db, run_dir=tmp_path / "run1",
                           search_attributes=search.ALL[:1]) as server:
        client = await Client.connect(server.address)
        assert set(await custom_attributes(client)) == {search.CANARY_JOB.name}
        await client.start_workflow("Nothing", id="survivor", task_queue="nobody")
    assert (tmp_path / "run1" / "temporal.log").exists()  # a given run dir is kept
    with TemporalDevServer(db_filename=db, run_dir=tmp_path / "run2") as server:
        client = await Client.connect(server.address)
        assert (await custom_attributes(client)).items() >= EXPECTED.items()
        description = await client.get_workflow_handle("survivor").describe()
        assert description.workflow_type == "Nothing"


def test_port_in_use_is_refused() -> None:
    with TemporalDevServer() as first:
        second = TemporalDevServer(port=first.port)
        try:
            second.start()
        except RuntimeError as err:
            assert f"port {first.port}" in str(err)
        else:
            raise AssertionError("a second server on the same port started")
        finally:
            second.stop()


def flaky_cli(tmp_path: Path, failures: int) -> Path:
    """A ``temporal`` that panics like a server losing an internal port for its first ``failures`` starts."""
    real = devenv_temporal.temporal_cli()
    count = tmp_path / "starts"
    script = tmp_path / "temporal"
    script.write_text(f"""#!/bin/sh
if [ "$2" = start-dev ]; then
  echo x >> {count}
  if [ "$(wc -l < {count})" -le {failures} ]; then
    echo "panic: listen tcp 127.0.0.1:40831: bind: address already in use"
    for i in $(seq 40); do echo "goroutine $i [running]:"; done
    exit 2
  fi
fi
exec {real} "$@"
""")
    script.chmod(0o755)
    return count


async def test_a_server_dying_while_starting_is_started_again(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """start-dev binds ports it picked itself a moment earlier; losing one is not the user's fault."""
    starts = flaky_cli(tmp_path, failures=devenv_temporal.START_ATTEMPTS - 1)
    monkeypatch.setattr(devenv_temporal, "temporal_cli", lambda: tmp_path / "temporal")
    with TemporalDevServer(search_attributes=(), db_filename=tmp_path / "t.db") as server:
        client = await Client.connect(server.address)
        await client.start_workflow("Nothing", id="after-retries", task_queue="nobody")
    assert len(starts.read_text().splitlines()) == devenv_temporal.START_ATTEMPTS


def test_a_server_that_always_dies_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    starts = flaky_cli(tmp_path, failures=100)
    monkeypatch.setattr(devenv_temporal, "temporal_cli", lambda: tmp_path / "temporal")
    server = TemporalDevServer(search_attributes=())
    with pytest.raises(TemporalError) as failed:
        server.start()
    message = str(failed.value)
    # the reason leads, though the goroutine stacks after it are longer than the tail shown
    assert "panic: listen tcp 127.0.0.1:40831: bind: address already in use" in message
    assert f"start {devenv_temporal.START_ATTEMPTS} of {devenv_temporal.START_ATTEMPTS}" in message
    assert len(starts.read_text().splitlines()) == devenv_temporal.START_ATTEMPTS
    assert server.process is None


async def test_time_skipping_env_has_search_attributes() -> None:
    """The test server has no ListSearchAttributes; a start that sets all four proves them."""
    env = await time_skipping_env()
    try:
        assert env.client.data_converter is pydantic_data_converter
        attributes = TypedSearchAttributes([SearchAttributePair(key, "x") for key in search.ALL])
        handle = await env.client.start_workflow("Nothing", id="sa", task_queue="nobody",
                                                 search_attributes=attributes)
        description = await handle.describe()
        assert {key.name: description.typed_search_attributes.get(key) for key in search.ALL} == {
            key.name: "x" for key in search.ALL}
    finally:
        await env.shutdown()


async def test_local_env_has_search_attributes() -> None:
    async with await local_env() as env:
        assert (await custom_attributes(env.client)).items() >= EXPECTED.items()
