"""Custom search attributes, so ``temporal workflow list --query "CanaryPhase='paused'"`` works.

Keyword attributes only: exact-match filters, short values, nothing secret.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

CANARY_JOB = SearchAttributeKey.for_keyword("CanaryJob")
CANARY_NAMESPACE = SearchAttributeKey.for_keyword("CanaryNamespace")
CANARY_WORKLOAD = SearchAttributeKey.for_keyword("CanaryWorkload")
CANARY_PHASE = SearchAttributeKey.for_keyword("CanaryPhase")

ALL = (CANARY_JOB, CANARY_NAMESPACE, CANARY_WORKLOAD, CANARY_PHASE)
