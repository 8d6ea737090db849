"""Who an operation is recorded as: the one check every client applies before a name is sent.

The actor ends up in the job's history and on the web page; the page escapes it, but another
tool reading the history (a terminal, a chat hook, Temporal's UI) may not. So a name with
markup or control characters is refused where it enters: in ``canaryctl`` (the OS user or
``$CANARY_ACTOR``) and in the API's token names. The workflow does not check it: a history
that already holds such a name must replay as it ran.
"""

from __future__ import annotations

import unicodedata

MAX_ACTOR = 256
_MARKUP = set("<>&\"'`")


def actor_problem(name: str) -> str | None:
    """Why ``name`` cannot be recorded as an actor, or None when it can."""
    if not name.strip():
        return "must not be empty"
    if len(name) > MAX_ACTOR:
        return f"must be at most {MAX_ACTOR} characters"
    for char in name:
        if char in _MARKUP:
            return f"must not contain {char!r} (no markup characters: < > & \" ' `)"
        if unicodedata.category(char) in {"Cc", "Cf", "Zl", "Zp"}:
            return f"must not contain control character {char!r}"
    return None


def check_actor(name: str) -> str:
    """``name`` if it can be recorded, else ValueError saying why (pydantic names the field)."""
    problem = actor_problem(name)
    if problem is not None:
        raise ValueError(problem)
    return name
