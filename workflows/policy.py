"""Pure delivery arithmetic: how many pods a weight needs, where new rules resume.

Kept apart from the workflow so it can be tested exhaustively without Temporal, and so the
CLI can show the same numbers the workflow acts on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from workflows.spec import AnyStep, CanaryScale, SetWeightStep


def canary_replicas_for_weight(total: int, weight: int) -> int:
    """Canary pods for ``weight`` percent of ``total``: rounded up, so any weight above 0 gets a pod."""
    if total <= 0 or weight <= 0:
        return 0
    return min(total, max(1, math.ceil(total * weight / 100)))


def stable_replicas_for_weight(total: int, weight: int) -> int:
    """Stable pods for the ``100 - weight`` percent a router leaves it, under ``dynamicStableScale``.

    Rounded up, and at least one while the stable side has any weight, for the same reason a
    canary with weight gets a pod: a share of the requests with nobody to answer them. At 100 %
    to the canary the stable side needs none.
    """
    if total <= 0 or weight >= 100:
        return 0
    return min(total, max(1, -(-total * (100 - max(0, weight)) // 100)))


def canary_replicas_for_scale(total: int, scale: CanaryScale) -> int:
    """Canary pods a ``setCanaryScale`` step asks for."""
    if scale.replicas is not None:
        return scale.replicas
    return canary_replicas_for_weight(total, scale.percent or 0)


def effective_weight(canary: int, stable: int) -> int:
    """The share of Ready pods, which is the share of traffic under replica-ratio routing."""
    serving = canary + stable
    return 0 if serving == 0 else round(100 * canary / serving)


def resume_index(steps: Sequence[AnyStep], weight: int) -> int:
    """Where a running release continues after ``update-rules``.

    Right after the last ``setWeight`` that does not exceed the current weight, so the new
    rules' pause at that weight still runs and no weight is applied twice; from the top when
    no such step exists.
    """
    resume = 0
    for index, step in enumerate(steps):
        if isinstance(step, SetWeightStep) and step.set_weight <= weight:
            resume = index + 1
    return resume
