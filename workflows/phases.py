"""The job's phases, apart from the models, which re-export them.

``canaryctl`` offers them on its command line without loading pydantic (start-up time).
"""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    """What the job is doing now; also the ``CanaryPhase`` search attribute."""

    INITIALIZING = "initializing"
    HEALTHY = "healthy"
    PROGRESSING = "progressing"
    PAUSED = "paused"
    PROMOTING = "promoting"
    ROLLING_BACK = "rolling-back"
    FAILED = "failed"
    # The Deployment (or its namespace) is gone; the job waits for it to come back.
    WORKLOAD_MISSING = "workload-missing"
    # The cluster refuses what the job must do (forbidden, invalid); the job retries later.
    ERROR = "error"
    TERMINATED = "terminated"
    DELETED = "deleted"
