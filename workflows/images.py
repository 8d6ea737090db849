"""Container image references, checked before they reach a Deployment.

A bad reference would otherwise surface minutes later as ImagePullBackOff on a canary pod;
``update-version`` refuses it at once, with the reason. The grammar is the one of the
distribution spec's reference format: ``[host[:port]/]path[:tag][@digest]``. Pure code: the
workflow's update validators and the activities both call it.
"""

from __future__ import annotations

import re

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_DOMAIN_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"^(?:{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$")
MAX_NAME_LENGTH = 255


def _split(ref: str) -> tuple[str, str | None, str | None]:
    """Split ``name[:tag][@digest]``; a colon before the last slash belongs to a registry port."""
    name, _, digest = ref.partition("@")
    tag: str | None = None
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        name, tag = name[:colon], name[colon + 1:]
    return name, tag, (digest if "@" in ref else None)


def validate_image(ref: str) -> None:
    """Reject an image reference the kubelet could never pull, with a message a user can act on.

    Raises:
        ValueError: naming what is wrong (empty, whitespace, uppercase, bad tag or digest).
    """
    if not ref:
        raise ValueError("image must not be empty")
    if any(ch.isspace() for ch in ref):
        raise ValueError(f"image {ref!r} must not contain whitespace")
    name, tag, digest = _split(ref)
    if not name:
        raise ValueError(f"image {ref!r} has no repository name")
    first, slash, rest = name.partition("/")
    # distribution/reference's rule: the first component is a registry if it looks like a host.
    looks_like_host = any(c in first for c in ".:") or first == "localhost" or first != first.lower()
    is_domain = bool(slash) and looks_like_host
    domain, path = (first, rest) if is_domain else ("", name)
    if domain and not _DOMAIN.match(domain):
        raise ValueError(f"image {ref!r} has an invalid registry host {domain!r}")
    if path != path.lower():
        raise ValueError(f"image {ref!r}: repository name {path!r} must be lowercase")
    if not _PATH.match(path):
        raise ValueError(
            f"image {ref!r}: repository name {path!r} may only contain lowercase letters, digits "
            "and single separators (., _, __, -) between them, in /-separated components"
        )
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"image {ref!r}: repository name is longer than {MAX_NAME_LENGTH} characters")
    if tag is not None and not _TAG.match(tag):
        raise ValueError(
            f"image {ref!r} has an invalid tag {tag!r}: use up to 128 letters, digits, '_', '.' or '-', "
            "not starting with '.' or '-'"
        )
    if digest is not None and not _DIGEST.match(digest):
        raise ValueError(
            f"image {ref!r} has an invalid digest {digest!r}: expected algorithm:hex, "
            "such as sha256:<64 hex digits>"
        )
