"""The session table of one worker: which replica answered each conversation's last turn.

The engine reads it (`engine.affinity.SessionView`) and decides; the views write to it once a turn was
answered, off the client's latency. Bounded twice: entries expire `ttlSeconds` after their last answered
turn, and each rule keeps at most `maxSessions` (the least recently used are forgotten first), so a flood
of session keys costs a fixed amount of memory. A session is keyed by a 16-byte hash of (tenant, value)
(`engine.affinity.session_digest`), never by the value the client sent: an entry's size does not depend
on the client, and tenants never share a pin. The clock is injected so tests step it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from .engine.affinity import SessionKey

Pin = tuple[str, str]
"""(endpoint, replica)."""


class SessionTable:
    """Per-rule LRU maps of session digest → (pinned replica, expiry); one table per worker process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._rules: dict[tuple[str, str], OrderedDict[bytes, tuple[Pin, float]]] = {}

    def pinned(self, session: SessionKey) -> Pin | None:
        """The replica that answered the session's last turn, unless it expired (then it is forgotten)."""
        sessions = self._rules.get((session.policy, session.rule))
        if sessions is None:
            return None
        entry = sessions.get(session.digest)
        if entry is None:
            return None
        if entry[1] <= self._clock():
            del sessions[session.digest]
            return None
        return entry[0]

    def remember(self, session: SessionKey, endpoint: str, replica: str) -> None:
        """Pin the session to the replica that answered it, for `ttl_seconds` from now."""
        sessions = self._rules.setdefault((session.policy, session.rule), OrderedDict())
        sessions[session.digest] = ((endpoint, replica), self._clock() + session.ttl_seconds)
        sessions.move_to_end(session.digest)
        while len(sessions) > session.max_sessions:
            sessions.popitem(last=False)

    def __len__(self) -> int:
        return sum(len(sessions) for sessions in self._rules.values())
