"""Small helpers for tests that look at the real cluster."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def eventually(probe: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.2,
               what: str = "condition") -> T:
    """Poll ``probe`` until it returns a truthy value or stops raising AssertionError."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except AssertionError as error:
            last = error
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}") from last


def deployment(name: str, *, image: str, replicas: int = 3, labels: dict[str, str] | None = None,
               template_labels: dict[str, str] | None = None,
               template_annotations: dict[str, str] | None = None,
               progress_deadline: int | None = None) -> dict[str, Any]:
    selector = {"app": name}
    spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": selector},
        "template": {
            "metadata": {"labels": {**selector, **(template_labels or {})},
                         "annotations": template_annotations or {}},
            "spec": {"containers": [{"name": "app", "image": image}]},
        },
    }
    if progress_deadline is not None:
        spec["progressDeadlineSeconds"] = progress_deadline
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": labels or selector}, "spec": spec}


def service(name: str, *, selector: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": selector, "ports": [{"port": 80, "targetPort": 8080}]}}
