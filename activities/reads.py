"""GET one object as the API server's JSON, or None when it does not exist.

Every activity module reads objects raw (``_preload_content=False``: the client's models drop
fields they do not know, and a write built from such a copy would drop them too), and needs
"missing" as an answer, not an error. One helper, so each does it the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException

from activities.errors import kube_errors, not_found

Obj = dict[str, Any]
REQUEST_TIMEOUT = 10.0


def read_or_none(read: Callable[..., Any], kind: str, namespace: str, name: str) -> Obj | None:
    """``read(name, namespace)`` (a client's ``read_namespaced_*``) as JSON; None for a 404."""
    with kube_errors(f"read {kind} {namespace}/{name}"):
        try:
            response = read(name, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as error:
            if not_found(error):
                return None
            raise
    data: Obj = json.loads(response.data)
    return data
