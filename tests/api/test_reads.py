"""Readers share Temporal's answers, but never one from before a write they waited for.

``SharedReads`` on its own, with a clock the test moves: no Temporal needed. The API and page
tests (tests/api/test_api.py, tests/web) check the same promise end to end: an operation's
effect shows in the very next read.
"""

from __future__ import annotations

import asyncio

import pytest

from starter.api.reads import SharedReads


class Source:
    """Something slow to ask, that counts how often it was asked and answers with its state."""

    def __init__(self) -> None:
        self.calls = 0
        self.state = "before"
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = False

    async def read(self) -> str:
        self.calls += 1
        seen = self.state
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("Temporal hiccup")
        return seen


async def asked(source: Source, times: int) -> None:
    """Let the loop turn until ``source`` has been asked ``times`` times."""
    for _ in range(100):
        if source.calls >= times:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"asked {source.calls} times, not {times}")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_a_burst_of_identical_reads_makes_one_call() -> None:
    source, shared = Source(), SharedReads(ttl=0.5)
    source.gate.clear()
    readers = [asyncio.create_task(shared.get("job", source.read)) for _ in range(200)]
    await asked(source, 1)
    source.gate.set()
    assert await asyncio.gather(*readers) == ["before"] * 200
    assert source.calls == 1
    assert await shared.get("other job", source.read) == "before" and source.calls == 2


async def test_an_answer_is_reused_for_its_ttl_then_replaced_in_the_background() -> None:
    source, clock = Source(), Clock()
    shared = SharedReads(ttl=0.5, grace=0.5, clock=clock)
    await shared.get("job", source.read)
    source.state = "after"
    clock.now += 0.4
    assert await shared.get("job", source.read) == "before" and source.calls == 1
    # Past its time to live the answer is still handed out at once, while one call fetches the next.
    clock.now += 0.2
    source.gate.clear()
    assert [await shared.get("job", source.read) for _ in range(3)] == ["before"] * 3
    await asked(source, 2)
    source.gate.set()
    await asked_and_answered(shared, "job", source, "after")
    assert source.calls == 2
    # Past the grace as well, a reader waits for a new answer.
    source.state = "later"
    clock.now += 1.1
    assert await shared.get("job", source.read) == "later" and source.calls == 3


async def asked_and_answered(shared: SharedReads, key: str, source: Source, expected: str) -> None:
    """Let the loop turn until the background call has landed and ``key`` reads ``expected``."""
    for _ in range(100):
        if await shared.get(key, source.read) == expected:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{key} never read {expected!r}")


async def test_a_failed_refresh_keeps_the_answer_until_its_grace_ends() -> None:
    source, clock = Source(), Clock()
    shared = SharedReads(ttl=0.5, grace=0.5, clock=clock)
    await shared.get("job", source.read)
    source.fail = True
    clock.now += 0.6
    assert await shared.get("job", source.read) == "before"
    await asked(source, 2)
    await asyncio.sleep(0)
    assert await shared.get("job", source.read) == "before"
    clock.now += 0.5
    with pytest.raises(RuntimeError):
        await shared.get("job", source.read)


async def test_a_read_after_a_write_never_gets_an_answer_from_before_it() -> None:
    source, clock = Source(), Clock()
    shared = SharedReads(ttl=60, clock=clock)
    assert await shared.get("job", source.read) == "before"
    # A read is still under way (it saw the old state) when the write returns.
    source.gate.clear()
    early = asyncio.create_task(shared.get("job2", source.read))
    await asked(source, 2)
    source.state = "after"
    shared.changed()
    late = asyncio.create_task(shared.get("job2", source.read))
    await asked(source, 3)
    source.gate.set()
    assert (await early, await late) == ("before", "after")
    # Neither the kept answer nor the early read's is handed out any more.
    assert await shared.get("job", source.read) == "after"
    assert await shared.get("job2", source.read) == "after"


async def test_a_failure_is_shared_by_its_burst_but_not_kept() -> None:
    source, shared = Source(), SharedReads(ttl=60)
    source.fail = True
    source.gate.clear()
    readers = [asyncio.create_task(shared.get("job", source.read)) for _ in range(3)]
    await asked(source, 1)
    source.gate.set()
    results = await asyncio.gather(*readers, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results) and source.calls == 1
    source.fail = False
    assert await shared.get("job", source.read) == "before" and source.calls == 2


async def test_a_reader_that_gives_up_does_not_cancel_the_others() -> None:
    source, shared = Source(), SharedReads(ttl=60)
    source.gate.clear()
    quitter = asyncio.create_task(shared.get("job", source.read))
    stayer = asyncio.create_task(shared.get("job", source.read))
    await asked(source, 1)
    quitter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await quitter
    source.gate.set()
    assert await stayer == "before" and source.calls == 1
