"""How far an activity that does several things in one attempt got, kept in its heartbeat details.

A fused activity (``activities/steps.py``: a whole step, the held promotion) does writes and
waits one after another. Temporal keeps the newest heartbeat details of an attempt and hands
them to the next attempt (a dead worker's retry, a broken watch), so the record of finished
stages travels there: a retry skips what is done and does what is left. The helpers it calls
heartbeat through :func:`heartbeat`, which sends that record rather than a bare message, so no
inner heartbeat can wipe it.

Nothing is sent in an attempt's first ``QUIET_SECONDS``: a step that ends sooner costs no
heartbeat (each is a write on the Temporal server), and since the worker sends at most one per
``HEARTBEAT_THROTTLE`` of the same length, a cancellation arrives no later than before. What a
retry could not find again (an edit set aside) goes out at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from temporalio import activity

from workflows.models import HoldStableResult

_LOCAL = threading.local()  # sync activities run one per thread: the record of the running one
QUIET_SECONDS = 2.0  # the worker's HEARTBEAT_THROTTLE; well inside the waits' 5 s heartbeat timeout


class Progress:
    """Stages done, and what the stages found that the workflow must hear even if a later one fails."""

    def __init__(self, record: dict[str, Any]) -> None:
        """``record``: the details a previous attempt heartbeat last (empty on the first attempt)."""
        self.done: set[str] = {str(stage) for stage in record.get("done") or []}
        self.displaced: dict[str, Any] | None = record.get("displaced")
        self.generation = int(record.get("generation") or 0)
        self._quiet_until = time.monotonic() + QUIET_SECONDS
        self._sent = self.details()  # the record the newest heartbeat carries

    def beat(self, waiting: str | None = None) -> None:
        """Heartbeat this record, unless the attempt is young and nothing in it is new and unrecoverable."""
        if time.monotonic() < self._quiet_until and self.displaced == self._sent["displaced"]:
            return
        self._send(self.details(waiting))

    def flush(self) -> None:
        """Hand what the quiet start held back to the next attempt (the SDK sends it with the failure)."""
        if self.details(self._sent["waiting"]) != self._sent:
            self._send(self.details())

    def _send(self, details: dict[str, Any]) -> None:
        self._sent = details
        activity.heartbeat(details)

    def details(self, waiting: str | None = None) -> dict[str, Any]:
        """The heartbeat details: this record, plus what the attempt waits for now."""
        return {"done": sorted(self.done), "displaced": self.displaced, "generation": self.generation,
                "waiting": waiting}

    def mark(self, stage: str) -> None:
        """``stage`` is done: a retry that gets this record does not do it again."""
        self.done.add(stage)
        self.beat()

    def keep(self, held: HoldStableResult) -> None:
        """Remember what a write of the user's Deployment found and left (an edit set aside, its generation)."""
        if held.displaced is not None:
            self.displaced = held.displaced.model_dump(mode="json")
        self.generation = max(self.generation, held.generation)


@contextmanager
def tracked() -> Iterator[Progress]:
    """The running activity's progress, resumed from its previous attempt's heartbeat details."""
    details = activity.info().heartbeat_details
    record = details[0] if details and isinstance(details[0], dict) else {}
    progress = Progress(record)
    _LOCAL.current = progress
    try:
        yield progress
    except BaseException:
        # A cancelled attempt may be refused the heartbeat: its retry then redoes idempotent stages.
        with suppress(Exception):
            progress.flush()
        raise
    finally:
        _LOCAL.current = None


def heartbeat(message: str | None = None) -> None:
    """Heartbeat; inside a fused activity, its progress record rides along with ``message``."""
    progress: Progress | None = getattr(_LOCAL, "current", None)
    if progress is not None:
        progress.beat(message)
    elif message is not None:
        activity.heartbeat(message)
    else:
        activity.heartbeat()
