"""What the API and its page read from Temporal, shared between concurrent readers for a moment.

Every read of a job costs Temporal a describe and a query, and a query costs the worker a
workflow task: at 200 concurrent GETs those, not the API, were where the time went
(``bench/api_load_bench.py``). Readers of the same thing therefore share one answer:

* concurrent identical reads share one call (single flight);
* an answer is reused for ``ttl`` seconds after it arrived, so a burst, or every open page
  polling its job, costs one call per job per ``ttl``; for ``grace`` seconds more it is still
  handed out at once while one call fetches its successor in the background, so a hot job's
  readers never wait for Temporal, only the first reader of a cold one does;
* every write the API sends (an operation, an apply) forgets all answers and calls under way
  once it has finished, whether it succeeded or not: no reader that starts after a write
  returned is given an answer, or joins a call, from before it. So a user of the API or the
  page sees their own operation at once; what changes by itself (a timed pause ending, an
  analysis, another client's ``canaryctl``) shows up at most ``ttl + grace`` (1 s) plus one
  call late, about the page's own poll interval.

Failures are shared by the readers of that one call but never kept. Answers are shared
objects: routes and templates read them and never change them.
"""

# No `from __future__ import annotations`: FastAPI reads the dependency's annotations at run time.

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
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
# Past this many keys, those with no usable answer and no call under way are dropped.
PRUNE_ABOVE = 1024


@dataclass(frozen=True)
class _Answer:
    value: Any
    fresh_until: float  # handed out as it is until then
    usable_until: float  # then still handed out, while its successor is fetched


@dataclass
class _Slot:
    """What is known for one key: the last answer, and the call under way, if any."""

    answer: _Answer | None = None
    call: asyncio.Task[Any] | None = None


class SharedReads:
    """Single flight plus a short time to live, per key, reset by every write (see the module)."""

    def __init__(self, ttl: float = DEFAULT_TTL, grace: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.grace = ttl if grace is None else grace
        self._clock = clock
        self._slots: dict[Hashable, _Slot] = {}
        # Calls that changed() forgot are still awaited by their readers; held here too, since
        # the event loop keeps only weak references to tasks.
        self._running: set[asyncio.Task[Any]] = set()

    def changed(self) -> None:
        """A write has finished: nothing read (or still being read) before it is handed out again.

        Calls under way go on for the readers that joined them, but land in slots that are no
        longer here, so their answers are never kept.
        """
        self._slots.clear()

    async def get(self, key: Hashable, load: Callable[[], Awaitable[T]]) -> T:
        """The answer for ``key``: a current one if there is one, else ``load()``'s, shared."""
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = self._pruned_slot()
        now = self._clock()
        answer = slot.answer
        if answer is not None and now < answer.usable_until:
            if now >= answer.fresh_until and slot.call is None:
                self._call(slot, load)  # its successor, fetched in the background
            value: T = answer.value
            return value
        call = slot.call or self._call(slot, load)
        # Shielded: a reader that gives up (its client went away) must not cancel the others' call.
        result: T = await asyncio.shield(call)
        return result

    def _pruned_slot(self) -> _Slot:
        if len(self._slots) >= PRUNE_ABOVE:
            now = self._clock()
            self._slots = {key: slot for key, slot in self._slots.items()
                           if slot.call is not None or (slot.answer is not None and now < slot.answer.usable_until)}
        return _Slot()

    def _call(self, slot: _Slot, load: Callable[[], Awaitable[Any]]) -> asyncio.Task[Any]:
        async def call() -> Any:
            try:
                value = await load()
            except BaseException:
                slot.call = None  # a failure is the answer of this call only: the next reader asks again
                raise
            arrived = self._clock()
            slot.answer = _Answer(value, arrived + self.ttl, arrived + self.ttl + self.grace)
            slot.call = None
            return value

        task = asyncio.get_running_loop().create_task(call())
        slot.call = task
        self._running.add(task)
        task.add_done_callback(self._landed)
        return task

    def _landed(self, task: asyncio.Task[Any]) -> None:
        self._running.discard(task)
        if not task.cancelled():
            task.exception()  # a background refresh's failure is nobody's to raise: marked as seen


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
