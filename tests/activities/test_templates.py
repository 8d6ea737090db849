"""Pure template helpers: the hash identifies a version, images, the canary template, image refs."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from activities.templates import (
    HASH_ANNOTATION,
    JOB_KEY,
    TRACK_LABEL,
    canary_template,
    images,
    template_hash,
)
from workflows.images import validate_image


def _template(image: str = "registry.local/web:1", **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": "web", **labels}, "creationTimestamp": None},
        "spec": {"containers": [{"name": "app", "image": image, "ports": [{"containerPort": 8080}]},
                                {"name": "sidecar", "image": "registry.local/proxy:3"}]},
    }


def _reordered(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reordered(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reordered(v) for v in value]
    return value


def test_hash_is_12_hex_and_stable_under_key_order() -> None:
    template = _template()
    digest = template_hash(template)
    assert len(digest) == 12 and int(digest, 16) >= 0
    assert template_hash(_reordered(template)) == digest


def test_hash_ignores_creation_timestamp_and_our_own_keys() -> None:
    template = _template()
    plain = {"metadata": {"labels": {"app": "web"}}, "spec": template["spec"]}
    assert template_hash(plain) == template_hash(template)
    ours = _template(**{TRACK_LABEL: "canary", JOB_KEY: "job-1"})
    ours["metadata"]["annotations"] = {HASH_ANNOTATION: "abc", JOB_KEY: "job-1"}
    assert template_hash(ours) == template_hash(template)


def test_hash_changes_with_image_labels_and_user_keys_in_our_domain() -> None:
    base = template_hash(_template())
    assert template_hash(_template(image="registry.local/web:2")) != base
    assert template_hash(_template(tier="front")) != base
    # The local cluster's simulate label changes what the pods do: it is the user's, not ours.
    assert template_hash(_template(**{"canary-delivery.dev/simulate": "crash"})) != base


def test_images_maps_container_names() -> None:
    assert images(_template()) == {"app": "registry.local/web:1", "sidecar": "registry.local/proxy:3"}
    assert images({}) == {}


def test_canary_template_adds_track_job_and_hash_and_keeps_the_same_identity() -> None:
    template = _template()
    canary = canary_template(template, "0123456789ab", "shop-web")
    assert canary["metadata"]["labels"] == {"app": "web", TRACK_LABEL: "canary", JOB_KEY: "shop-web"}
    assert canary["metadata"]["annotations"] == {HASH_ANNOTATION: "0123456789ab"}
    assert template_hash(canary) == template_hash(template)
    assert "canary-delivery.dev/track" not in template["metadata"]["labels"], "input left untouched"


@pytest.mark.parametrize("ref", [
    "nginx", "nginx:1.27", "library/nginx:latest", "registry.local/web:1",
    "localhost:5000/team/app:v2.0-rc_1",
    "ghcr.io/org/some-app__x.y:tag", "[::1]:5000/app:1",
    "busybox@sha256:" + "a" * 64, "registry.local/web:1@sha256:" + "0" * 64, "Registry.Example.com/app:1",
])
def test_validate_image_accepts_real_references(ref: str) -> None:
    validate_image(ref)


@pytest.mark.parametrize(("ref", "message"), [
    ("", "must not be empty"),
    (" nginx", "whitespace"),
    ("nginx :1", "whitespace"),
    ("registry.local/Web:1", "must be lowercase"),
    ("MyApp", "must be lowercase"),
    ("registry.local/web:-bad", "invalid tag"),
    ("registry.local/web:" + "x" * 129, "invalid tag"),
    ("registry.local/web:", "invalid tag"),
    ("registry.local/web@sha256:xyz", "invalid digest"),
    ("registry.local/web@md5", "invalid digest"),
    ("registry.local/we--b_:1", "may only contain"),
    ("registry.local//web", "may only contain"),
    ("-bad.host/web", "invalid registry host"),
    (":1", "no repository name"),
])
def test_validate_image_rejects_with_a_clear_message(ref: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_image(ref)


def test_workflow_code_imports_nothing_that_does_io() -> None:
    """workflows/ must stay deterministic: no Kubernetes client, no HTTP, no files."""
    root = Path(__file__).resolve().parents[2] / "workflows"
    offenders = []
    for path in sorted(root.glob("*.py")):
        tree = ast.parse(path.read_text())
        modules = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        modules += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        offenders += [f"{path.name}: {m}" for m in modules
                      if m.split(".")[0] in ("kubernetes", "activities", "urllib3", "requests", "socket", "os")]
    assert offenders == []
