"""``canary_jobs{phase}``: how many running jobs are in each phase, as Temporal's visibility counts them.

Only a process that sees every job can say this, and no worker does (each holds the jobs it
happens to run), so the API counts them: one visibility count per phase, refreshed in the
background every ``interval`` seconds rather than at scrape time, because the SDK's exporter
serves what the meter last recorded. With several API replicas each reports the same numbers;
dashboards take ``max by (phase)``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from temporalio.client import Client
from temporalio.common import MetricMeter

from starter.api.deps import ClientHolder
from workflows import names, search
from workflows.models import Phase

log = logging.getLogger(__name__)

JOBS = "canary_jobs"
DEFAULT_INTERVAL = 15.0


async def count_by_phase(client: Client) -> dict[str, int]:
    """Running jobs per phase (every phase present, zero included, so a drained phase reads 0)."""
    counts: dict[str, int] = {}
    for phase in Phase:
        query = (f"WorkflowType = '{names.WORKFLOW_TYPE}' AND ExecutionStatus = 'Running' "
                 f"AND {search.CANARY_PHASE.name} = '{phase.value}'")
        counts[phase.value] = (await client.count_workflows(query)).count
    return counts


async def _refresh_forever(holder: ClientHolder, meter: MetricMeter, interval: float) -> None:
    gauge = meter.create_gauge(JOBS, "Running canary jobs, by phase")
    while True:
        try:
            for phase, count in (await count_by_phase(await holder.get())).items():
                gauge.set(count, {"phase": phase})
        except Exception as err:  # Temporal away: keep the last numbers, try again
            log.warning("counting jobs by phase failed: %s", err)
        await asyncio.sleep(interval)


def install_job_metrics(app: FastAPI, meter: MetricMeter, *, interval: float = DEFAULT_INTERVAL) -> None:
    """Run the refresher for the app's lifetime (around whatever lifespan it already has)."""
    previous = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_: FastAPI) -> AsyncIterator[Any]:
        task = asyncio.create_task(_refresh_forever(app_.state.clients, meter, interval))
        try:
            async with previous(app_) as state:
                yield state
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    app.router.lifespan_context = lifespan
