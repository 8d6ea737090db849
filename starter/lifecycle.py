"""Ending a process that used the Temporal client without crashing the interpreter on the way out.

Why this exists: the Temporal SDK answers every RPC from a Rust (tokio) thread, which hands the
result to the event loop with ``loop.call_soon_threadsafe``. That call writes to the loop's
self-pipe and so releases the GIL for a moment; the main thread can take it, see the result,
leave ``asyncio.run`` and start finalizing the interpreter before the Rust thread gets the GIL
back. A thread that asks for the GIL during finalization is ended by CPython from inside the
Rust code, whose unwinding then releases a thread state that is no longer current: ``Fatal
Python error: PyGILState_Release``, exit 134 (or 139), after the work had succeeded. It happened
to ``make demo`` in about one run of five and to a bare ``connect`` + ``list`` in one of two.

The Rust threads belong to the SDK's process-wide runtime and cannot be joined, but they can
be waited out: while one is inside Python it has a frame, which :func:`sys._current_frames`
shows. :func:`settle` waits (with the GIL released) until no thread outside ``threading``'s
own is running Python code, so finalization starts only when every completed RPC has left the
interpreter. Entry points call it after their event loop and clients are closed.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

# A Rust thread leaves ``call_soon_threadsafe`` within microseconds of getting the GIL back; the
# bound only matters if something else outside ``threading`` runs Python code for good.
SETTLE_TIMEOUT = 2.0


def foreign_threads() -> set[int]:
    """Ids of threads running Python code that ``threading`` did not start (the SDK's Rust threads)."""
    known = {thread.ident for thread in threading.enumerate()}
    return set(sys._current_frames()) - known


def settle(timeout: float = SETTLE_TIMEOUT) -> bool:
    """Wait until no foreign thread is inside the interpreter; False if one still is at ``timeout``."""
    deadline = time.monotonic() + timeout
    while foreign_threads():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.001)  # releases the GIL: the waiting thread takes it and finishes
    return True


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, then :func:`settle`: what every entry point that uses Temporal runs."""
    try:
        return asyncio.run(main)
    finally:
        settle()
