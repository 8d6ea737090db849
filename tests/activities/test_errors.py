"""Kubernetes API failures become ApplicationErrors whose type and retryability the workflow relies on."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException
from temporalio.exceptions import ApplicationError

from activities import errors


def _api_error(status: int, message: str = "boom", headers: dict[str, str] | None = None) -> ApiException:
    error = ApiException(status=status, reason="Reason")
    error.body = json.dumps({"kind": "Status", "message": message, "code": status})
    error.headers = headers
    return error


@pytest.mark.parametrize(("status", "type_", "retryable"), [
    (404, errors.WORKLOAD_NOT_FOUND, False),
    (403, errors.KUBERNETES_FORBIDDEN, False),
    (400, errors.KUBERNETES_INVALID, False),
    (422, errors.KUBERNETES_INVALID, False),
    (409, errors.KUBERNETES_CONFLICT, True),
    (401, errors.KUBERNETES_UNAUTHORIZED, True),
    (429, errors.KUBERNETES_UNAVAILABLE, True),
    (500, errors.KUBERNETES_UNAVAILABLE, True),
    (503, errors.KUBERNETES_UNAVAILABLE, True),
    (418, errors.KUBERNETES_ERROR, True),
])
def test_status_maps_to_type_and_retryability(status: int, type_: str, retryable: bool) -> None:
    mapped = errors.from_api_exception(_api_error(status), what="patch Deployment ns/web")
    assert mapped.type == type_
    assert mapped.non_retryable is (not retryable)
    assert (type_ in errors.NON_RETRYABLE_ERRORS) is (not retryable)
    assert mapped.message == f"patch Deployment ns/web: boom (HTTP {status})"


def test_message_is_truncated_and_retry_after_is_honoured() -> None:
    mapped = errors.from_api_exception(_api_error(422, "x" * 2000), what="apply")
    assert len(mapped.message) < errors.MAX_MESSAGE + 40
    throttled = errors.from_api_exception(_api_error(429, headers={"Retry-After": "7"}), what="get")
    assert throttled.next_retry_delay == timedelta(seconds=7)
    assert errors.from_api_exception(_api_error(503), what="get").next_retry_delay is None


def test_kube_errors_says_what_failed_without_the_raw_response_and_maps_connection_failures() -> None:
    with pytest.raises(ApplicationError) as info, errors.kube_errors("delete ReplicaSet ns/web-1"):
        raise _api_error(403, 'replicasets.apps "web-1" is forbidden: cannot delete resource "replicasets"')
    assert info.value.type == errors.KUBERNETES_FORBIDDEN and info.value.non_retryable
    # The job's reason is the innermost message of the failure Temporal records: this one, not
    # the client's exception text with its HTTP headers.
    assert info.value.__cause__ is None
    assert info.value.message == ('delete ReplicaSet ns/web-1: replicasets.apps "web-1" is forbidden: '
                                  'cannot delete resource "replicasets" (HTTP 403)')

    with pytest.raises(ApplicationError) as info, errors.kube_errors("read Deployment ns/web"):
        raise urllib3.exceptions.MaxRetryError(None, "/apis", "connection refused")  # type: ignore[arg-type]
    assert info.value.type == errors.KUBERNETES_UNAVAILABLE and not info.value.non_retryable
