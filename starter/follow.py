"""Following a job's release to its end, for pipelines: ``canaryctl status`` and ``--wait``.

A pipeline needs one thing from a release: did it go out? So the answer is an exit status —
0 promoted (or a healthy job with nothing to deliver), 1 failed, terminated or rolled back (with
the reason), 2 when the time ran out or the job could not be reached — and the way there is a
line per step (or a live bar on a terminal) in the build log.

:func:`judge` decides from one ``details`` answer, so the rules are tested without a server;
:func:`follow` polls and reports until :func:`judge` has a verdict or the deadline passes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from temporalio.client import Client

from starter import client as canary
from starter.errors import CanaryError, JobNotFound, Unavailable
from workflows.models import JobDetails, JobVersions, Outcome, Phase, Version

EXIT_DONE, EXIT_FAILED, EXIT_TIMEOUT = 0, 1, 2
POLL_SECONDS = 1.0
# Outcomes a pipeline must fail on; SUPERSEDED is neither: the newer release is followed instead.
BAD_OUTCOMES = {Outcome.FAILED, Outcome.TERMINATED, Outcome.ROLLED_BACK}


@dataclass(frozen=True)
class Verdict:
    """How following ended: the exit status and the line that says why."""

    status: int
    message: str


@dataclass(frozen=True)
class Target:
    """Which release to follow.

    ``release``: a canary revision (None: whichever is current). ``after``: follow only a
    release newer than this revision (``set-image``/``rollback --wait``: the one the operation
    starts, which the job may not have begun when the first answer comes).
    """

    release: int | None = None
    after: int | None = None


def newest_revision(details: JobDetails) -> int:
    """The highest revision the job knows: what a new release must exceed."""
    versions = [v for v in (details.stable, details.canary, details.last_release) if v is not None]
    return max((v.revision for v in versions), default=0)


def _ended(version: Version, job: str) -> Verdict:
    reason = f": {version.reason}" if version.reason else ""
    outcome = version.outcome.value if version.outcome else "ended"
    status = EXIT_FAILED if version.outcome in BAD_OUTCOMES else EXIT_DONE
    return Verdict(status, f"{job}: release {version.revision} {outcome}{reason}")


def judge(details: JobDetails, target: Target, history: JobVersions | None = None) -> Verdict | Target:
    """A verdict, or the target to keep following (possibly a newer release than asked for).

    ``history`` is needed only when the followed release has ended and is no longer the job's
    ``last_release`` (a newer one started and ended between two looks).
    """
    job = f"{details.namespace}/{details.name}"
    if details.phase == Phase.DELETED:
        return Verdict(EXIT_FAILED, f"{job}: the job was deleted")
    if details.phase == Phase.TERMINATED and details.canary is None and target.release is None:
        return Verdict(EXIT_FAILED, f"{job}: the job was terminated{_reason(details)}")
    if target.after is not None and (details.canary is None or details.canary.revision <= target.after):
        ended = details.last_release
        if ended is not None and ended.revision > target.after and ended.outcome is not None:
            return _ended(ended, job)
        return target  # the release the operation asked for has not started yet
    if details.canary is not None and (target.release is None or details.canary.revision >= target.release):
        return Target(release=details.canary.revision)
    if target.release is not None:
        return _release_end(details, target.release, history, job)
    return _idle(details, target, job)


def _release_end(details: JobDetails, release: int, history: JobVersions | None, job: str) -> Verdict | Target:
    """The followed release is no longer the canary: how it ended, once the job says so."""
    for version in ([details.last_release] if details.last_release else []) + (history.history if history else []):
        if version.revision == release and version.outcome is not None:
            if version.outcome == Outcome.SUPERSEDED:
                return Target(after=release)
            return _ended(version, job)
    if history is None:
        return Target(release=release)  # the caller fetches the history and asks again
    return _idle(details, Target(release=release), job)


def _idle(details: JobDetails, target: Target, job: str) -> Verdict | Target:
    """No release to follow: the last one's outcome (until the next starts), else the job's state."""
    ended = details.last_release
    if ended is not None and ended.outcome is not None and details.phase in (Phase.HEALTHY, Phase.FAILED):
        return _ended(ended, job)
    if details.phase == Phase.FAILED:
        return Verdict(EXIT_FAILED, f"{job}: failed{_reason(details)}")
    if details.phase == Phase.TERMINATED:
        return Verdict(EXIT_FAILED, f"{job}: the job was terminated{_reason(details)}")
    if details.phase == Phase.HEALTHY:
        stable = f" (revision {details.stable.revision})" if details.stable else ""
        return Verdict(EXIT_DONE, f"{job}: healthy{stable}, nothing to deliver")
    return target


def _reason(details: JobDetails) -> str:
    reason = details.last_error or (details.last_release.reason if details.last_release else None)
    return f": {reason}" if reason else ""


async def follow(client: Client, namespace: str, name: str, target: Target, *, timeout: float,
                 report: Callable[[JobDetails], None], poll: float = POLL_SECONDS) -> Verdict:
    """Report each answer until the release ends, ``timeout`` seconds pass, or the job is unreachable.

    No query is cut off mid-call (the deadline is checked between polls, each query bounded by
    the client's own RPC timeout), so nothing is left running in the SDK when this returns.
    """
    deadline = time.monotonic() + timeout
    job = f"{namespace}/{name}"
    last_error = ""
    while True:
        try:
            details = await canary.details(client, namespace, name)
        except JobNotFound as err:
            return Verdict(EXIT_TIMEOUT, err.message)
        except Unavailable as err:
            last_error = err.message  # a worker restarting: keep trying until the deadline
        else:
            report(details)
            outcome = judge(details, target)
            if isinstance(outcome, Target) and outcome.release is not None and outcome.after is None \
                    and details.canary is None:
                try:
                    history = await canary.versions(client, namespace, name)
                except CanaryError:
                    history = None
                if history is not None:
                    outcome = judge(details, outcome, history)
            if isinstance(outcome, Verdict):
                return outcome
            target = outcome
        if time.monotonic() + poll > deadline:
            what = f" ({last_error})" if last_error else ""
            return Verdict(EXIT_TIMEOUT, f"{job}: timed out after {_seconds(timeout)} before the release "
                                         f"ended{what}")
        await asyncio.sleep(poll)


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.0f} min"

