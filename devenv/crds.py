"""The traffic routers' CustomResourceDefinitions, installed into the local cluster.

No mesh or gateway runs here, but the objects the routers write (VirtualService, HTTPRoute)
must meet the same schemas as in a real cluster, or a test proves nothing about them. So the
CRDs come from the projects' own Go modules (``scripts/build-cluster.sh`` copies them into
``<cluster home>/crds/<set>``, each set with a ``VERSION`` file) and are applied here with
server-side apply: installing them again, into a persistent cluster, is a no-op.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

FIELD_MANAGER = "canary-delivery-devenv"


@dataclass(frozen=True)
class CrdSet:
    """One project's CRDs: the cache directory they live in, and the ones the routers need."""

    name: str
    # Only these are installed: every schema costs the API server start-up time and memory,
    # and the routers touch no other kind.
    kinds: frozenset[str]


ISTIO = CrdSet("istio", frozenset({"virtualservices.networking.istio.io", "destinationrules.networking.istio.io"}))
GATEWAY_API = CrdSet("gateway-api", frozenset({
    "httproutes.gateway.networking.k8s.io", "gateways.gateway.networking.k8s.io",
    "gatewayclasses.gateway.networking.k8s.io", "referencegrants.gateway.networking.k8s.io",
}))
ALL_SETS: tuple[CrdSet, ...] = (ISTIO, GATEWAY_API)


class CrdError(RuntimeError):
    """The CRDs are not in the cache, or the API server did not establish them."""


def load(home: Path, sets: Iterable[CrdSet]) -> list[dict[str, Any]]:
    """The wanted CRDs of ``sets`` from the cache under ``home``, as API objects."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C parser reads the 1 MB of schemas in 0.2 s
    found: list[dict[str, Any]] = []
    for crd_set in sets:
        directory = home / "crds" / crd_set.name
        if not (directory / "VERSION").is_file():
            raise CrdError(f"{crd_set.name} CRDs missing in {directory}: run scripts/build-cluster.sh "
                           "(or `make cluster`) first")
        wanted = [doc for path in sorted(directory.glob("*.yaml"))
                  for doc in yaml.load_all(path.read_text(), Loader=loader)
                  if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition"
                  and doc["metadata"]["name"] in crd_set.kinds]
        missing = crd_set.kinds - {doc["metadata"]["name"] for doc in wanted}
        if missing:
            raise CrdError(f"{directory} lacks {', '.join(sorted(missing))}")
        found.extend(wanted)
    return found


def install(api: ApiClient, crds: Sequence[dict[str, Any]], *, timeout: float = 60.0) -> None:
    """Apply ``crds`` and return once the API server serves every one of them."""
    from kubernetes import client

    extensions = client.ApiextensionsV1Api(api)
    for crd in crds:
        extensions.patch_custom_resource_definition(
            crd["metadata"]["name"], crd, field_manager=FIELD_MANAGER, force=True,
            _content_type="application/apply-patch+yaml")
    pending = {crd["metadata"]["name"] for crd in crds}
    deadline = time.monotonic() + timeout
    while pending:
        for name in sorted(pending):
            response = extensions.read_custom_resource_definition(name, _preload_content=False)
            conditions = (json.loads(response.data).get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
                pending.discard(name)
        if pending and time.monotonic() > deadline:
            raise CrdError(f"not established after {timeout:.0f} s: {', '.join(sorted(pending))}")
        if pending:
            time.sleep(0.1)
