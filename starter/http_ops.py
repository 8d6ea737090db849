"""One ``canaryctl`` operation over Temporal's HTTP API, without the Temporal SDK or pydantic.

The same steps as :func:`starter.client.operate`, in the same order and with the same
messages: find the job's workflow (its id, then the legacy id), fill in the gate a ``continue``
or ``promote`` means from the ``details`` query, run the update until it completes, and turn a
rejection into :class:`~starter.errors.InvalidInput` or :class:`~starter.errors.Conflict`.
Whatever this path cannot do exactly as the SDK path would (a profile file to read, a workflow
id the HTTP API cannot name, a server without the HTTP API) raises
:class:`~starter.temporal_http.Unsupported` before anything was sent that changes the job, and
the caller takes the SDK path.
"""

from __future__ import annotations

import os
import ssl
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from starter.connection import ConnectionOverrides
from starter.errors import CanaryError, Conflict, InvalidInput, JobEnded, JobNotFound, Unavailable
from starter.temporal_http import (
    CANCELLED,
    DEADLINE_EXCEEDED,
    NOT_FOUND,
    RESOURCE_EXHAUSTED,
    UNAVAILABLE,
    Endpoint,
    ServerError,
    Unsupported,
    addressable,
    running,
)
from workflows import names

# The same bounds as starter.client (QUERY_TIMEOUT; UPDATE_TIMEOUT comes from the caller).
QUERY_TIMEOUT = 10.0
GATE_OPERATIONS = (names.CONTINUE, names.PROMOTE)
INVALID_OPERATION_INPUT = "InvalidOperationInput"
# The SDK reads these (and a profile file); this path reads only the variables it understands.
_PROFILE_ENV = ("TEMPORAL_CONFIG_FILE", "TEMPORAL_PROFILE", "TEMPORAL_TLS_CLIENT_CERT_DATA",
                "TEMPORAL_TLS_CLIENT_KEY_DATA", "TEMPORAL_TLS_SERVER_CA_CERT_DATA",
                "TEMPORAL_TLS_DISABLE_HOST_VERIFICATION", "TEMPORAL_GRPC_META_AUTHORIZATION")


def job_ids(namespace: str, name: str) -> tuple[str, ...]:
    """The ids :func:`starter.client._find` tries, in its order (``workflows.spec``, without pydantic).

    ``tests/starter/test_http_ops.py`` holds these equal to ``workflow_id``/``older_workflow_ids``.
    """
    return f"canary.{namespace}.{name}", f"canary/{namespace}/{name}", f"canary-{namespace}-{name}"


def _flag(value: str | None) -> bool | None:
    if value is None or value.strip() == "":
        return None
    return value.strip().lower() in ("1", "true", "yes", "on")


def _default_config_file(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "temporalio" / "temporal.toml"


def endpoint(address: str, overrides: ConnectionOverrides, environ: Mapping[str, str] | None = None) -> Endpoint:
    """The HTTP endpoint with the namespace, API key and TLS the gRPC path would use.

    Flags and ``TEMPORAL_*`` variables are read here as :mod:`starter.connection` reads them
    (flags win; an API key turns TLS on unless TLS is switched off). A profile file is read by
    the SDK only: when one is in play, this path steps aside rather than guess at it.
    """
    environ = os.environ if environ is None else environ
    if (overrides.profile or overrides.config_file or any(environ.get(key) for key in _PROFILE_ENV)
            or _default_config_file(environ).is_file()):
        raise Unsupported("a Temporal profile file is in use; the SDK reads it")
    namespace = overrides.namespace or environ.get("TEMPORAL_NAMESPACE") or "default"
    api_key = overrides.api_key or environ.get("TEMPORAL_API_KEY") or None
    ca = overrides.tls_ca_cert or environ.get("TEMPORAL_TLS_SERVER_CA_CERT_PATH")
    cert = overrides.tls_client_cert or environ.get("TEMPORAL_TLS_CLIENT_CERT_PATH")
    key = overrides.tls_client_key or environ.get("TEMPORAL_TLS_CLIENT_KEY_PATH")
    server_name = overrides.tls_server_name or environ.get("TEMPORAL_TLS_SERVER_NAME")
    tls = overrides.tls if overrides.tls is not None else _flag(environ.get("TEMPORAL_TLS"))
    if tls is None:
        tls = bool(api_key or ca or cert or key or server_name)
    if not tls:
        return Endpoint(address, namespace, api_key)
    if (cert is None) != (key is None):
        raise Unsupported("a client certificate without its key: the SDK path says so")
    context = ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
    try:
        if cert and key:
            context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as err:
        raise Unsupported(f"TLS files: {err}") from None
    return Endpoint(address, namespace, api_key, context, server_name)


# -- the operation --------------------------------------------------------------------------


def _job(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def _error(endpoint_: Endpoint, err: ServerError, missing: CanaryError | None, job: str | None) -> CanaryError:
    """:func:`starter.client._rpc_error`, for the HTTP API's JSON errors."""
    if err.code == NOT_FOUND:
        if err.names("NamespaceNotFoundFailure"):
            return Unavailable(f"Temporal namespace {endpoint_.namespace!r} not found at {endpoint_.address}")
        if missing is not None:
            return missing
    if err.code == UNAVAILABLE:
        return Unavailable(f"cannot reach Temporal at {endpoint_.address}: {err.message}")
    if err.code in (CANCELLED, DEADLINE_EXCEEDED):
        what = f" for canary job {job}" if job else ""
        return Unavailable(f"no answer from Temporal{what} in time: is the canary worker running?")
    return Unavailable(f"Temporal: {err.message}")


def find(endpoint_: Endpoint, namespace: str, name: str,
         ids: Callable[[str, str], Sequence[str]] | None = None) -> tuple[str, dict[str, Any]]:
    """The job's workflow id and description, chosen as :func:`starter.client._find` chooses.

    ``ids``: where to look, :func:`job_ids` unless told.
    """
    candidates = (ids or job_ids)(namespace, name)
    ended: tuple[str, dict[str, Any]] | None = None
    for workflow_id in candidates:
        if not addressable(workflow_id):
            # A job created by an older client may run under an id with '/', which the HTTP
            # API cannot name: only the SDK can look there (jobs created now never get here).
            raise Unsupported("the job may run under a workflow id with '/', which the HTTP API cannot name")
        try:
            info = endpoint_.describe(workflow_id)
        except ServerError as err:
            raise _error(endpoint_, err, None, _job(namespace, name)) from None
        if info is None:
            continue
        if running(info):
            return workflow_id, info
        ended = ended or (workflow_id, info)
    if ended is None:
        raise JobNotFound(f"no canary job {_job(namespace, name)}")
    return ended


def query(endpoint_: Endpoint, workflow_id: str, namespace: str, name: str, query_name: str) -> Any:
    """The query's plain answer; failures worded as :func:`starter.client._query` words them."""
    job = _job(namespace, name)
    try:
        return endpoint_.query(workflow_id, query_name, timeout=QUERY_TIMEOUT)
    except ServerError as err:
        if err.names("QueryFailedFailure"):
            raise CanaryError(f"canary job {job}: query {query_name} failed: {err.message}") from None
        raise _error(endpoint_, err, JobNotFound(f"no canary job {job}"), job) from None


def gate(details: Mapping[str, Any]) -> dict[str, int | None]:
    """:func:`starter.client.gate` on the ``details`` query's plain answer."""
    canary = details.get("canary")
    step = details.get("current_step", details.get("currentStep"))
    return {"release": canary.get("revision") if isinstance(canary, Mapping) else None,
            "step": step + 1 if isinstance(step, int) else None}


def operate(endpoint_: Endpoint, namespace: str, name: str, operation: str, request: Mapping[str, Any], *,
            timeout: float, ids: Callable[[str, str], Sequence[str]] | None = None) -> dict[str, Any]:
    """Run one operation as an update; the workflow's answer (``message``, ``phase``) as plain data."""
    if operation not in names.OPERATIONS:
        raise InvalidInput(f"unknown operation {operation!r}; one of: {', '.join(names.OPERATIONS)}",
                           field="operation")
    workflow_id, info = find(endpoint_, namespace, name, ids)
    job = _job(namespace, name)
    ended = JobEnded(f"canary job {job} has ended; apply it again to restart it")
    if operation in GATE_OPERATIONS and request.get("release") is None and request.get("step") is None:
        details = query(endpoint_, workflow_id, namespace, name, names.DETAILS_QUERY)
        request = {**request, **gate(details if isinstance(details, Mapping) else {})}
    if not running(info):
        raise ended
    return _update(endpoint_, workflow_id, job, operation, request, timeout)


def _update(endpoint_: Endpoint, workflow_id: str, job: str, operation: str, request: Mapping[str, Any],
            timeout: float) -> dict[str, Any]:
    """One update, asked again (same update id) until it completed or ``timeout`` ran out."""
    ended = JobEnded(f"canary job {job} has ended; apply it again to restart it")
    deadline = time.monotonic() + timeout
    update_id = uuid.uuid4().hex
    delay = 0.05
    while (left := deadline - time.monotonic()) > 0:
        try:
            result, failure = endpoint_.update(workflow_id, operation, request, update_id, timeout=left)
        except ServerError as err:
            if err.code == RESOURCE_EXHAUSTED:
                # Temporal admits 10 updates in flight per workflow: a burst waits its turn.
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(2 * delay, 1.0)
                continue
            if err.code in (DEADLINE_EXCEEDED, CANCELLED):
                continue  # the server's long poll ended before the update did: ask again
            raise _error(endpoint_, err, ended, job) from None
        if failure is not None:
            if failure.type == INVALID_OPERATION_INPUT:
                field = failure.details[0] if failure.details and isinstance(failure.details[0], str) else None
                raise InvalidInput(failure.message, field=field)
            raise Conflict(failure.message or "update rejected")
        if not isinstance(result, dict) or "message" not in result or "phase" not in result:
            raise Unavailable(f"canary job {job}: {operation} answered {result!r}")
        return result
    raise Unavailable(
        f"canary job {job}: {operation} not answered within {timeout:.0f} s; "
        "is the canary worker running? (it may still be applied when a worker picks it up)")


def debug(message: str) -> None:
    """Why the HTTP path stepped aside, for ``CANARY_DEBUG=1``: otherwise the fallback is silent."""
    if os.environ.get("CANARY_DEBUG"):
        print(f"debug: HTTP API not used: {message}", file=sys.stderr)
