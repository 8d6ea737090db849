"""Turn Kubernetes API failures into Temporal ``ApplicationError``s the workflow can act on.

The workflow never sees a ``kubernetes`` exception: its retry policy works on error *type*
names, so every failure an activity raises carries one of the constants below. The mapping
follows kopf's ``errors.py``: branch on the HTTP status, chain the original error as the
cause, and truncate long bodies. Transient failures (conflicts, throttling, server errors,
lost connections) stay retryable; failures a retry cannot fix do not.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import timedelta

import urllib3
from kubernetes.client.exceptions import ApiException
from temporalio.exceptions import ApplicationError

# Not retryable: the workflow must decide (fail the job, tell the user).
WORKLOAD_NOT_FOUND = "WorkloadNotFound"
OWNED_BY_OTHER_JOB = "OwnedByOtherJob"
KUBERNETES_FORBIDDEN = "KubernetesForbidden"
KUBERNETES_INVALID = "KubernetesInvalid"
INVALID_REQUEST = "InvalidRequest"
# The job's traffic spec does not fit the cluster: no such VirtualService, route or HTTPRoute,
# a destination that is not the stable or canary Service, the router's CRD not installed.
ROUTER_CONFIG_INVALID = "RouterConfigInvalid"
# Retryable: time or a fresh read fixes them.
KUBERNETES_CONFLICT = "KubernetesConflict"
KUBERNETES_UNAVAILABLE = "KubernetesUnavailable"
KUBERNETES_UNAUTHORIZED = "KubernetesUnauthorized"
KUBERNETES_ERROR = "KubernetesError"
# Retry-as-poll gates: "not yet", retried by a RetryPolicy whose interval is the poll interval.
CANARY_NOT_READY = "CanaryNotReady"
STABLE_NOT_ROLLED_OUT = "StableNotRolledOut"
# Retryable: the Deployment is rolling out by itself; pausing it now would freeze two versions.
ROLLOUT_IN_PROGRESS = "RolloutInProgress"

NON_RETRYABLE_ERRORS: tuple[str, ...] = (
    WORKLOAD_NOT_FOUND,
    OWNED_BY_OTHER_JOB,
    KUBERNETES_FORBIDDEN,
    KUBERNETES_INVALID,
    INVALID_REQUEST,
    ROUTER_CONFIG_INVALID,
)

MAX_MESSAGE = 500


def status_message(error: ApiException) -> str:
    """The ``message`` of the API server's Status body, else the HTTP reason; truncated."""
    message = str(error.reason or "")
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        body = json.loads(error.body or "{}")
        message = str(body.get("message") or message)
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


def _retry_after(error: ApiException) -> timedelta | None:
    with contextlib.suppress(AttributeError, TypeError, ValueError):
        seconds = int(str((error.headers or {}).get("Retry-After")))
        return timedelta(seconds=max(1, seconds))
    return None


def from_api_exception(
        error: ApiException, *, what: str, not_found: str = WORKLOAD_NOT_FOUND) -> ApplicationError:
    """Map one ``ApiException`` to an ``ApplicationError``; ``what`` names the call for the message.

    ``not_found`` is the type used for a 404: a missing target is not retryable.
    """
    status = int(error.status or 0)
    message = f"{what}: {status_message(error)} (HTTP {status})"
    if status == 404:
        return ApplicationError(message, type=not_found, non_retryable=True)
    if status == 403:
        return ApplicationError(message, type=KUBERNETES_FORBIDDEN, non_retryable=True)
    if status in (400, 422):
        return ApplicationError(message, type=KUBERNETES_INVALID, non_retryable=True)
    if status == 409:
        return ApplicationError(message, type=KUBERNETES_CONFLICT)
    if status == 401:
        return ApplicationError(message, type=KUBERNETES_UNAUTHORIZED)
    if status == 429 or status >= 500 or status == 0:
        return ApplicationError(message, type=KUBERNETES_UNAVAILABLE, next_retry_delay=_retry_after(error))
    return ApplicationError(message, type=KUBERNETES_ERROR)


@contextlib.contextmanager
def kube_errors(what: str, *, not_found: str = WORKLOAD_NOT_FOUND) -> Iterator[None]:
    """Re-raise API and connection failures inside the block as mapped ``ApplicationError``s.

    Without the client's exception as their cause: Temporal would carry it along, and the job's
    reason for a failed release is the innermost message, which for an ``ApiException`` is the
    raw response (headers and all) rather than the call, the API server's words and the status.
    """
    try:
        yield
    except ApiException as error:
        raise from_api_exception(error, what=what, not_found=not_found) from None
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise ApplicationError(f"{what}: {type(error).__name__}: {error}"[:MAX_MESSAGE],
                               type=KUBERNETES_UNAVAILABLE) from None


def not_found(error: ApiException) -> bool:
    """Tell whether the API said 404, for the calls where a missing object is a fine answer."""
    return int(error.status or 0) == 404
