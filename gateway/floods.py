"""Floods on the phone link, kept harmless: who is let in, and how they are counted.

Two pure helpers (no sockets, no clock of their own), used by :mod:`gateway.phone_link`
and :class:`gateway.door.DoorService`:

* :class:`PendingPool` — connections that have not yet sent their proof. An idle or
  trickling connection costs the attacker nothing, so the pool is bounded in total
  (``phone_link.max_pending``) and per source (``max_pending_per_source``). When a new
  connection exceeds a bound, a pending connection older than ``grace`` (2 s: a phone
  sends its hello at once) that has not sent a whole frame is closed to make room —
  never the new one, so a phone that connects always gets its turn:

  1. one that has not yet sent a whole frame (idle or trickling) before one that has
     sent its hello and waits to send the proof;
  2. of the source holding the most pending connections (a flood from one address
     does not push out phones from others);
  3. the oldest first.

  Connections younger than ``grace``, and those that have sent their hello, are spared
  — so an attacker who reconnects as fast as it can does not churn out a phone whose
  bytes a busy gateway has not read yet, nor one between hello and proof; only the hard
  bound (``phone_link.max_connections``, the file limit raised to fit it) closes those,
  again the oldest idle first.
* :class:`SourceCounts` — how many times something happened per source in the
  current interval, with a bounded number of sources (the rest are counted under
  ``"other"``), so a report per source per interval is a bounded number of rows.

A *source* is the peer's address without the port (``127.0.0.1``, ``::1``), or the
whole ``ble:<address>`` of a BLE central.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

__all__ = ["OTHER", "PendingPool", "SourceCounts", "source_of"]

#: the source under which counts beyond ``max_sources`` are kept
OTHER: Final = "other"

K = TypeVar("K", bound=Hashable)


def source_of(peer: str) -> str:
    """``"127.0.0.1:5123"`` → ``"127.0.0.1"``, ``"::1:5123"`` → ``"::1"``; ``ble:…`` whole."""
    if peer.startswith("ble:"):
        return peer
    host, sep, port = peer.rpartition(":")
    return host if sep and port.isdigit() else peer


@dataclass
class _Entry:
    source: str
    order: int
    since: float
    hello: bool = False


@dataclass
class PendingPool(Generic[K]):
    """Pending connections by key; :meth:`admit` says which ones to close for a newcomer."""

    max_total: int
    max_per_source: int
    #: the bound that spares nobody but the newcomer
    hard_limit: int = 2048
    #: seconds a new connection is spared by the soft bounds
    grace: float = 2.0
    _entries: dict[K, _Entry] = field(default_factory=dict)
    _per_source: dict[str, int] = field(default_factory=dict)
    _order: int = 0

    def __len__(self) -> int:
        return len(self._entries)

    def admit(self, key: K, source: str, now: float) -> list[K]:
        """Add ``key`` (arrived at ``now``, monotonic); return the keys to close now."""
        self._order += 1
        self._entries[key] = _Entry(source, self._order, now)
        self._per_source[source] = self._per_source.get(source, 0) + 1
        old = now - self.grace
        victims: list[K] = []
        while self._per_source[source] > self.max_per_source:
            if (v := self._pick(key, source, old, idle_only=True)) is None:
                break
            victims.append(v)
        while len(self._entries) > self.max_total:
            busiest = max(self._per_source, key=lambda s: self._per_source[s])
            v = self._pick(key, busiest, old, idle_only=True)
            if v is None and (v := self._pick(key, None, old, idle_only=True)) is None:
                break
            victims.append(v)
        while len(self._entries) > self.hard_limit:
            busiest = max(self._per_source, key=lambda s: self._per_source[s])
            v = self._pick(key, busiest, None) or self._pick(key, None, None)
            assert v is not None  # hard_limit >= 2: someone besides the newcomer
            victims.append(v)
        return victims

    def pending(self, key: K) -> bool:
        return key in self._entries

    def hello_seen(self, key: K) -> None:
        entry = self._entries.get(key)
        if entry is not None:
            entry.hello = True

    def discard(self, key: K) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            left = self._per_source[entry.source] - 1
            if left:
                self._per_source[entry.source] = left
            else:
                del self._per_source[entry.source]

    def _pick(
        self, newcomer: K, source: str | None, before: float | None, *, idle_only: bool = False
    ) -> K | None:
        """Remove and return the connection to close: of ``source`` (any if None),
        arrived before ``before`` (any if None), with no whole frame yet if ``idle_only``;
        idle ones first, then the oldest."""
        victim: K | None = None
        best: tuple[bool, int] | None = None
        for key, e in self._entries.items():
            if key == newcomer or (source is not None and e.source != source):
                continue
            if (before is not None and e.since > before) or (idle_only and e.hello):
                continue
            rank = (e.hello, e.order)
            if best is None or rank < best:
                victim, best = key, rank
        if victim is not None:
            self.discard(victim)
        return victim


class SourceCounts:
    """Counts per source for one interval; at most ``max_sources`` sources by name."""

    def __init__(self, max_sources: int = 64) -> None:
        self.max_sources = max_sources
        self._counts: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._counts)

    def key(self, source: str) -> str:
        """The name ``source`` is counted under (``OTHER`` once the table is full)."""
        if source in self._counts or len(self._counts) < self.max_sources:
            return source
        return OTHER

    def add(self, source: str, n: int = 1) -> str:
        k = self.key(source)
        self._counts[k] = self._counts.get(k, 0) + n
        return k

    def total(self) -> int:
        return sum(self._counts.values())

    def take(self) -> dict[str, int]:
        """The counts so far; the next interval starts empty."""
        counts, self._counts = self._counts, {}
        return counts
