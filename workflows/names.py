"""Names shared by the workflow and every client: task queue, operations, queries."""

from __future__ import annotations

TASK_QUEUE = "canary-delivery"
WORKFLOW_TYPE = "CanaryJobWorkflow"

UPDATE_VERSION = "update-version"
CONTINUE = "continue"
PROMOTE = "promote"
TERMINATE = "terminate"
ROLLBACK = "rollback"
UPDATE_RULES = "update-rules"
DELETE = "delete"
OPERATIONS = (UPDATE_VERSION, CONTINUE, PROMOTE, TERMINATE, ROLLBACK, UPDATE_RULES, DELETE)

WORKLOAD_CHANGED = "workload-changed"

DETAILS_QUERY = "details"
VERSIONS_QUERY = "versions"
