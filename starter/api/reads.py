"""What the API and its page read from Temporal, shared between concurrent readers for a moment.

Every read of a job costs Temporal a describe and a query, and a query costs the worker a
workflow task: at 200 concurrent GETs those, not the API, were where the time went
(``bench/api_load_bench.py``). Readers of the same thing therefore share one answer:

* concurrent identical reads share one call (single flight);
* an answer is reused for ``ttl`` seconds after it arrived, so a burst, or every open page
  polling its job, costs one call per job per ``ttl``;
* every write the API sends (an operation, an apply) forgets all answers and calls under way
  once it has finished, whether it succeeded or not: no reader that starts after a write
  returned is given an answer, or joins a call, from before it. So a user of the API or the page sees their own
  operation at once; what changes by itself (a timed pause ending, an analysis, another
  client's ``canaryctl``) shows up at most ``ttl`` late, within the page's own poll interval.

Failures are shared by the readers of that one call but never kept. Answers are shared
objects: routes and templates read them and never change them.
"""

# No `from __future__ import annotations`: FastAPI reads the dependency's annotations at run time.

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request

from starter import client as canary
from starter.api.deps import ClientHolder
from starter.client import JobSummary
from workflows.models import JobDetails, JobVersions

T = TypeVar("T")

# Long enough that a burst of requests, or every open page (each polls about once a second),
# shares one call per job; short enough that a change made outside the API is not noticed late.
DEFAULT_TTL = 0.5
# Past this many remembered answers, those no longer usable are dropped (names are the caller's).
PRUNE_ABOVE = 1024


@dataclass
class _Flight:
    """One call and, once it succeeded, until when its answer may be reused."""

    task: asyncio.Task[Any]
    expires: float | None = field(default=None)


class SharedReads:
    """Single flight plus a short time to live, per key, reset by every write (see the module)."""

    def __init__(self, ttl: float = DEFAULT_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._flights: dict[Hashable, _Flight] = {}
        # Calls under way that changed() forgot are still awaited by their readers; held here
        # too, since the event loop keeps only weak references to tasks.
        self._running: set[asyncio.Task[Any]] = set()

    def changed(self) -> None:
        """A write has finished: nothing read (or still being read) before it is handed out again.

        Calls under way go on for the readers that joined them, but are forgotten here, so
        their answers are never kept; they land in a map that no longer holds them.
        """
        self._flights.clear()

    async def get(self, key: Hashable, load: Callable[[], Awaitable[T]]) -> T:
        """The answer for ``key``: a current one if there is one, else ``load()``'s, shared."""
        flight = self._flights.get(key)
        if flight is None or not self._usable(flight):
            flight = self._start(key, load)
        # Shielded: a reader that gives up (its client went away) must not cancel the others' call.
        result: T = await asyncio.shield(flight.task)
        return result

    def _usable(self, flight: _Flight) -> bool:
        return not flight.task.done() or (flight.expires is not None and self._clock() < flight.expires)

    def _start(self, key: Hashable, load: Callable[[], Awaitable[Any]]) -> _Flight:
        if len(self._flights) >= PRUNE_ABOVE:
            self._flights = {k: f for k, f in self._flights.items() if self._usable(f)}

        async def call() -> Any:
            result = await load()
            flight.expires = self._clock() + self.ttl  # a failure sets none: it is never reused
            return result

        flight = _Flight(asyncio.get_running_loop().create_task(call()))
        self._running.add(flight.task)
        flight.task.add_done_callback(self._running.discard)
        self._flights[key] = flight
        return flight


class JobReads:
    """The reads the routes make, through one :class:`SharedReads`."""

    def __init__(self, clients: ClientHolder, shared: SharedReads) -> None:
        self.clients, self.shared = clients, shared

    async def details(self, namespace: str, name: str) -> JobDetails:
        """``starter.client.details``, shared."""
        async def load() -> JobDetails:
            return await canary.details(await self.clients.get(), namespace, name)

        return await self.shared.get(("details", namespace, name), load)

    async def versions(self, namespace: str, name: str) -> JobVersions:
        """``starter.client.versions``, shared."""
        async def load() -> JobVersions:
            return await canary.versions(await self.clients.get(), namespace, name)

        return await self.shared.get(("versions", namespace, name), load)

    async def jobs(self, namespace: str | None, phase: str | None, include_closed: bool) -> list[JobSummary]:
        """``starter.client.list_jobs``, shared (visibility is eventually consistent anyway)."""
        async def load() -> list[JobSummary]:
            return await canary.list_jobs(await self.clients.get(), namespace, phase, include_closed=include_closed)

        return await self.shared.get(("jobs", namespace, phase, include_closed), load)

    def changed(self) -> None:
        """Call once a write has returned (or failed): see :meth:`SharedReads.changed`."""
        self.shared.changed()


def job_reads(request: Request) -> JobReads:
    """The app's one :class:`JobReads`."""
    reads: JobReads = request.app.state.reads
    return reads


async def _job_reads(request: Request) -> JobReads:
    return job_reads(request)


# The client is connected inside the handler (on the first read or write), not by a dependency:
# FastAPI runs dependencies before it validates the body, and a bad request must be a 422 even
# while Temporal is down.
Reads = Annotated[JobReads, Depends(_job_reads)]
