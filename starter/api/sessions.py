"""The web page's sign-in sessions: a random id in the cookie, the principal on the server.

The cookie never holds the API token: a stolen cookie is then one session, which ends at its
expiry or when its holder signs out, not a token that works until the operator revokes it.
Sessions live in this process's memory, by design: an API restart signs everybody out (the
page sends them back to the sign-in form), there is no session database to secure, and
several API replicas behind one address need sticky routing for the page.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from starter.api.auth import Principal

SESSION_SECONDS = 12 * 3600
# Enough for every operator's browsers; a flood of sign-ins then evicts the oldest sessions
# instead of growing the process without bound.
MAX_SESSIONS = 10_000


@dataclass(frozen=True)
class Session:
    """Who signed in, and until when (monotonic seconds)."""

    principal: Principal
    expires: float


def _key(session_id: str) -> str:
    # Looked up by a digest, so the table holds nothing a memory dump could replay as a cookie.
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore:
    """Sessions by id: made at sign-in, refused once expired, deleted at sign-out."""

    def __init__(self, lifetime: float = SESSION_SECONDS, clock: Callable[[], float] = time.monotonic,
                 limit: int = MAX_SESSIONS) -> None:
        self.lifetime = lifetime
        self._clock = clock
        self._limit = limit
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, principal: Principal) -> str:
        """A new session for ``principal``; returns the id that goes into the cookie."""
        now = self._clock()
        self._sessions = {key: s for key, s in self._sessions.items() if s.expires > now}
        while len(self._sessions) >= self._limit:
            del self._sessions[next(iter(self._sessions))]  # dicts keep insertion order: the oldest
        session_id = secrets.token_urlsafe(32)
        self._sessions[_key(session_id)] = Session(principal, now + self.lifetime)
        return session_id

    def find(self, session_id: str | None) -> Principal | None:
        """The principal of a live session, or None (unknown, expired or signed out)."""
        if not session_id:
            return None
        key = _key(session_id)
        session = self._sessions.get(key)
        if session is None:
            return None
        if session.expires <= self._clock():
            del self._sessions[key]
            return None
        return session.principal

    def revoke(self, session_id: str | None) -> None:
        """End a session (sign-out); the same cookie is refused from now on."""
        if session_id:
            self._sessions.pop(_key(session_id), None)
