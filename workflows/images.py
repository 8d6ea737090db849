"""Container image references, checked before they reach a Deployment.

A bad reference would otherwise surface minutes later as ImagePullBackOff on a canary pod;
``update-version`` refuses it at once with the reason. The grammar follows the reference
format of the distribution spec: ``[host[:port]/]path[:tag][@digest]``.
"""

from __future__ import annotations

import re

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*" \
        r"(?::[0-9]+)?|\[[0-9a-fA-F:]+\](?::[0-9]+)?)"
_PATH = rf"{_COMPONENT}(?:/{_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(rf"^(?:(?P<host>{_HOST})/)?(?P<path>{_PATH})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$")


def image_problem(reference: str) -> str | None:
    """Why ``reference`` is not a valid image reference, or None when it is."""
    if not reference or not reference.strip():
        return "image must not be empty"
    if reference != reference.strip() or any(c.isspace() for c in reference):
        return f"image {reference!r} must not contain spaces"
    if len(reference) > 512:
        return "image reference is longer than 512 characters"
    match = _REFERENCE.match(reference)
    if match is None:
        if any(c.isupper() for c in reference.split("@")[0].split(":")[0].split("/", 1)[-1]):
            return f"image {reference!r}: the repository path must be lowercase"
        return (f"image {reference!r} is not a valid reference; "
                "expected [registry/]repository[:tag][@sha256:digest]")
    return None


def validate_image(reference: str) -> None:
    """Raise ValueError naming the problem when ``reference`` is not a usable image."""
    problem = image_problem(reference)
    if problem:
        raise ValueError(problem)
