"""Temporal's own HTTP API, spoken with the standard library: what a fast ``canaryctl`` operation needs.

Importing the Temporal SDK's client costs about 0.3 s, more than a whole pipeline step should
pay for one update. The frontend also serves its API as JSON over HTTP (``services.frontend.
rpc.httpPort``; ``temporal server start-dev --http-port``), and payloads whose encoding is
``json/plain`` travel there in "shorthand" form: plain JSON values. So describe, query, signal
and update need nothing but ``http.client``, ``json`` and ``ssl``.

This module only moves calls and answers; :mod:`starter.http_ops` decides what to send. A call
that this transport cannot make, or that the server does not serve, raises :class:`Unsupported`,
and the caller goes the SDK's way instead.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starter.errors import Unavailable

HTTP_ADDRESS_ENV = "TEMPORAL_HTTP_ADDRESS"
# gRPC status codes the server puts in its JSON errors.
NOT_FOUND, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, UNAVAILABLE, CANCELLED = 5, 8, 4, 14, 1
UPDATE_COMPLETED = "UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_COMPLETED"
RUNNING = "WORKFLOW_EXECUTION_STATUS_RUNNING"


class Unsupported(Exception):
    """This call cannot go over the HTTP API (or the server does not serve it): use the SDK."""


@dataclass(frozen=True)
class Failure:
    """A failure the workflow reported (an update's rejection): its type, message and details."""

    type: str | None
    message: str
    details: list[Any]


class ServerError(Exception):
    """A JSON error answer: the gRPC code, message and the detail types the server named."""

    def __init__(self, code: int, message: str, detail_types: list[str]) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail_types = detail_types

    def names(self, detail: str) -> bool:
        """Whether the server named this failure detail (``NotFoundFailure``...): how kinds are told apart."""
        return any(kind.endswith(f".{detail}") for kind in self.detail_types)


def addressable(workflow_id: str) -> bool:
    """Whether the HTTP API can name this workflow.

    Every route binds the workflow id to one path segment, and the server decodes ``%2F``
    before it matches routes (grpc-gateway's legacy unescaping): an id with ``/`` in it cannot
    be reached at all (double encoding reaches the server as a literal ``%2F``).
    """
    return "/" not in workflow_id and workflow_id not in ("", ".", "..")


@dataclass(frozen=True)
class Endpoint:
    """Where the HTTP API is and how to be let in: the same namespace, key and TLS as the gRPC path."""

    address: str  # host:port
    namespace: str
    api_key: str | None = None
    tls: ssl.SSLContext | None = None
    server_name: str | None = None

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        host, _, port = self.address.rpartition(":")
        if not host or not port.isdigit():
            raise Unavailable(f"Temporal HTTP address {self.address!r} is not host:port")
        if self.tls is not None:
            return _TLSConnection(host.strip("[]"), int(port), timeout=timeout, context=self.tls,
                                  server_name=self.server_name)
        return http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout)

    def call(self, method: str, path: str, body: Mapping[str, Any] | None = None, *,
             timeout: float = 10.0) -> dict[str, Any]:
        """One request; the decoded JSON answer, :class:`ServerError` for an error answer.

        A connection that cannot be made, or an answer that is not the API's JSON (a proxy's
        page, a route the server does not have), is :class:`Unsupported`: the SDK path decides.
        """
        url = f"/api/v1/namespaces/{_segment(self.namespace)}/{path}"
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        connection = self._connection(timeout)
        try:
            connection.request(method, url, body=json.dumps(body) if body is not None else None, headers=headers)
            response = connection.getresponse()
            raw = response.read()
            status = response.status
        except TimeoutError:
            raise ServerError(DEADLINE_EXCEEDED, "no answer in time", []) from None
        except (OSError, http.client.HTTPException) as err:
            raise Unsupported(f"HTTP API at {self.address}: {err}") from None
        finally:
            connection.close()
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            raise Unsupported(f"HTTP API at {self.address}: answer {status} is not JSON") from None
        if not isinstance(answer, dict):
            raise Unsupported(f"HTTP API at {self.address}: unexpected answer")
        if status >= 400:
            details = [str(d.get("@type", "")) for d in answer.get("details") or [] if isinstance(d, dict)]
            code = int(answer.get("code", 2))
            if status == 404 and not details:
                raise Unsupported(f"HTTP API at {self.address} does not serve {method} {url}")
            raise ServerError(code, str(answer.get("message", "")), details)
        return answer

    # -- the three calls an operation needs -------------------------------------------------

    def describe(self, workflow_id: str) -> dict[str, Any] | None:
        """The workflow's execution info (``status``, ``searchAttributes``...), None if there is none."""
        try:
            answer = self.call("GET", f"workflows/{_segment(workflow_id)}")
        except ServerError as err:
            if err.code == NOT_FOUND and err.names("NotFoundFailure"):
                return None
            raise
        info = answer.get("workflowExecutionInfo")
        return info if isinstance(info, dict) else {}

    def query(self, workflow_id: str, name: str, *, timeout: float) -> Any:
        """The query's answer as plain JSON."""
        answer = self.call("POST", f"workflows/{_segment(workflow_id)}/query/{_segment(name)}",
                           {"query": {}}, timeout=timeout)
        if "queryRejected" in answer:
            raise ServerError(9, f"query rejected: {answer['queryRejected']}", [])
        return _single(answer.get("queryResult"))

    def update(self, workflow_id: str, name: str, request: Mapping[str, Any], update_id: str, *,
               timeout: float) -> tuple[Any, Failure | None]:
        """Run an update to completion: ``(result, None)`` or ``(None, the rejection)``."""
        answer = self.call("POST", f"workflows/{_segment(workflow_id)}/update/{_segment(name)}", {
            "request": {"input": {"args": [dict(request)]}, "meta": {"updateId": update_id}},
            "waitPolicy": {"lifecycleStage": UPDATE_COMPLETED},
        }, timeout=timeout)
        outcome = answer.get("outcome")
        if not isinstance(outcome, dict):
            # Answered before completion (the server's own deadline): the caller asks again.
            raise ServerError(DEADLINE_EXCEEDED, "update not completed", [])
        if "failure" in outcome:
            return None, _failure(outcome["failure"])
        return _single(outcome.get("success")), None


class _TLSConnection(http.client.HTTPSConnection):
    """HTTPS whose certificate is checked against ``server_name`` when one is set (as the gRPC path does)."""

    def __init__(self, host: str, port: int, *, timeout: float, context: ssl.SSLContext,
                 server_name: str | None) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._server_name = server_name

    def connect(self) -> None:
        if not self._server_name:
            super().connect()
            return
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self._server_name)  # type: ignore[attr-defined]


def _segment(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _single(payloads: Any) -> Any:
    """The one value of a payload list, decoded from shorthand (or from a full payload)."""
    if isinstance(payloads, dict) and "payloads" in payloads:
        payloads = payloads["payloads"]
    if not isinstance(payloads, list) or not payloads:
        return None
    return _value(payloads[0])


def _value(payload: Any) -> Any:
    """A shorthand value as is; a full ``{metadata, data}`` payload decoded when it holds JSON."""
    if isinstance(payload, dict) and set(payload) <= {"metadata", "data"} and "metadata" in payload:
        encoding = base64.b64decode(payload["metadata"].get("encoding", "")).decode()
        data = base64.b64decode(payload.get("data", ""))
        if encoding == "json/plain":
            return json.loads(data) if data else None
        if encoding == "binary/null":
            return None
        raise Unsupported(f"payload encoded as {encoding}")
    return payload


def _failure(failure: Mapping[str, Any]) -> Failure:
    """The innermost application failure that carries a message: the validator's own words."""
    current: Any = failure
    while isinstance(current, Mapping):
        info = current.get("applicationFailureInfo")
        message = str(current.get("message", ""))
        if message or not isinstance(current.get("cause"), Mapping):
            details = info.get("details") if isinstance(info, Mapping) else None
            values = details.get("payloads", []) if isinstance(details, Mapping) else details or []
            return Failure(type=str(info.get("type")) if isinstance(info, Mapping) and info.get("type") else None,
                           message=message, details=[_value(v) for v in values])
        current = current.get("cause")
    return Failure(type=None, message="", details=[])


def running(info: Mapping[str, Any]) -> bool:
    """Whether a describe's execution info is of a running workflow (no status: treat as running, as the SDK path)."""
    return bool(info.get("status", RUNNING) == RUNNING)


def configured_address(flag: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """``--http-address``, else ``$TEMPORAL_HTTP_ADDRESS``; None means: no HTTP path."""
    environ = os.environ if environ is None else environ
    return flag or environ.get(HTTP_ADDRESS_ENV) or None
