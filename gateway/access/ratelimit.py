"""Rate limiting against guessing, and the ``access.suspicious`` flag.

Denials are counted per peer (a phone's address) and per door over ``rate_window``
seconds (monotonic time). A peer with ``rate_limit`` denials in the window is refused
at once (``rate_limited``) until the window has passed — its own ``rate_limited``
answers do not extend the lockout. A door with ``rate_limit`` denials from all peers
is *under attack*: every further denial there answers ``rate_limited`` instead of its
real reason (no oracle for an attacker), while a valid credential with a valid proof
still opens, so rotating addresses cannot lock carers out. When a door collects
``suspicious_after`` denials within ``suspicious_window`` the decision is flagged
``suspicious`` — at most once per window per door.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Final

__all__ = ["RateLimiter"]

_MAX_KEYS: Final = 4096


class _Counter:
    def __init__(self, window: float) -> None:
        self.window = window
        self._hits: dict[str, deque[float]] = {}

    def count(self, key: str, now: float) -> int:
        q = self._hits.get(key)
        if q is None:
            return 0
        limit = now - self.window
        while q and q[0] <= limit:
            q.popleft()
        if not q:
            del self._hits[key]
            return 0
        return len(q)

    def add(self, key: str, now: float) -> int:
        q = self._hits.get(key)
        if q is None:
            if len(self._hits) >= _MAX_KEYS:
                self._prune(now)
            q = self._hits[key] = deque()
        q.append(now)
        return self.count(key, now)

    def _prune(self, now: float) -> None:
        for key in list(self._hits):
            self.count(key, now)
        while len(self._hits) >= _MAX_KEYS:  # still full: forget the oldest key
            del self._hits[next(iter(self._hits))]


class RateLimiter:
    def __init__(
        self,
        *,
        limit: int,
        window: float,
        suspicious_after: int,
        suspicious_window: float,
        monotonic: Callable[[], float],
    ) -> None:
        self.limit = limit
        self.suspicious_after = suspicious_after
        self.suspicious_window = suspicious_window
        self._monotonic = monotonic
        self._peers = _Counter(window)
        self._doors = _Counter(window)
        self._door_recent = _Counter(suspicious_window)
        self._flagged: dict[str, float] = {}

    def peer_limited(self, peer: str) -> bool:
        if peer not in self._peers._hits:  # no recent denial: the common case, no clock read
            return False
        return self._peers.count(peer, self._monotonic()) >= self.limit

    def door_limited(self, door: str) -> bool:
        return self._doors.count(door, self._monotonic()) >= self.limit

    def record_denial(self, peer: str, door: str, *, count_peer: bool = True) -> tuple[int, bool]:
        """Count one denial; (denials at the door in the suspicious window, newly suspicious)."""
        now = self._monotonic()
        if count_peer:
            self._peers.add(peer, now)
        self._doors.add(door, now)
        recent = self._door_recent.add(door, now)
        if recent < self.suspicious_after:
            return recent, False
        last = self._flagged.get(door)
        if last is not None and now - last < self.suspicious_window:
            return recent, False
        if len(self._flagged) >= _MAX_KEYS:
            self._flagged.clear()
        self._flagged[door] = now
        return recent, True
