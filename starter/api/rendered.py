"""The job page's HTML, rendered once per answer and reader instead of once per request.

Rendering the job page costs about a millisecond and a half of the API's one core, more than
everything else a request does once Temporal's answers are shared (``starter.api.reads``): 200
concurrent page loads spent about 0.3 s just rendering the same HTML. While the shared answers
a page was rendered from are still the current ones (the very same objects), the same page for
the same reader is the same HTML, so it is kept and sent again. A new answer (after the time
to live, or after a write) is a new object, so the page is rendered afresh: it is never older
than the answers are.

Not kept: a page with a running countdown. Its ``data-server-now`` must be the moment it was
sent, or the countdown would run late by the page's age.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

# Pages kept at most (a few per job and reader); past it, the oldest go.
LIMIT = 512


@dataclass(frozen=True)
class _Page:
    sources: tuple[object, ...]
    html: str


class RenderedPages:
    """The last HTML per page and reader, valid while its source answers are the current ones."""

    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self._pages: dict[Hashable, _Page] = {}

    def html(self, key: Hashable, sources: tuple[object, ...], render: Callable[[], str]) -> str:
        """The page kept for ``key`` if it was rendered from these very ``sources``, else ``render()``'s."""
        kept = self._pages.get(key)
        if kept is not None and len(kept.sources) == len(sources) and all(
                a is b for a, b in zip(kept.sources, sources, strict=True)):
            return kept.html
        html = render()
        self._pages.pop(key, None)
        while len(self._pages) >= self.limit:
            del self._pages[next(iter(self._pages))]  # dicts keep insertion order: the oldest first
        self._pages[key] = _Page(sources, html)
        return html
