"""The time floor: a clock set back cannot revive an expired token.

A hub without a clock battery boots with a wrong time until NTP answers, and anyone
with a shell can set the clock. The gateway therefore keeps a *floor*: the latest
wall-clock time it knows has passed. It rises with every trusted reading, moves on
with the monotonic clock while the gateway runs (time passes even when the wall clock
is set back), is written to disk at most every :data:`PERSIST_EVERY` seconds (by the
daemon's clock check, off the decision path: :meth:`TimeFloor.persist_due`) and on
:meth:`flush` (shutdown), and never starts below :data:`BUILD_FLOOR`.

The clock is *trusted* while it reads no earlier than the floor minus the tolerance
(``access.skew_seconds``). When it is not, decisions use the floor as "now" and
``access.untrusted_clock_allows`` says what still opens (see ``docs/credentials.md``).
A clock set far *ahead* and then corrected leaves the floor ahead: the gateway reports
the clock untrusted until real time passes the floor; a technician who knows the clock
is right sets the floor with ``lockgw clock set-floor`` while lockgw is stopped.

**A lost floor.** When ``time_floor.json`` is missing (after the first start) or
damaged, the floor is not reset to :data:`BUILD_FLOOR`: it is taken from the journal's
newest event (every event carries the time it was recorded), so a clock set back
while the file was deleted still cannot revive an expired token. The loss is
reported (:attr:`TimeFloor.fallback`, health, ``state.fallback``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from gateway.access.state import StateDir, StateFallback, StateHistory

__all__ = ["BUILD_FLOOR", "PERSIST_EVERY", "ClockStatus", "TimeFloor"]

#: 2026-01-01T00:00:00Z: no clock reading before this is believed
BUILD_FLOOR: Final = 1_767_225_600.0
PERSIST_EVERY: Final = 300.0
_FILE: Final = "time_floor.json"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class ClockStatus:
    trusted: bool
    now: float
    floor: float
    detail: str


class TimeFloor:
    def __init__(
        self,
        state: StateDir,
        *,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
        tolerance: float,
        history: StateHistory | None = None,
    ) -> None:
        self._state = state
        self._clock = clock
        self._monotonic = monotonic
        self.tolerance = tolerance
        #: set when the file was missing or damaged at start (see the module docstring)
        self.fallback: StateFallback | None = None
        loaded = state.read(_FILE)
        stored = loaded.value
        floor = BUILD_FLOOR
        if isinstance(stored, dict) and isinstance(stored.get("floor"), int | float):
            floor = max(floor, float(stored["floor"]))
        elif loaded.problem is None:  # verified, yet not a floor: damaged all the same
            loaded = state.damaged(_FILE, "does not hold a time floor")
        lost = loaded.problem == "damaged" or (
            loaded.problem == "missing" and history is not None and history.has_events
        )
        newest = history.newest_ts if history is not None else None
        if lost:
            floor = max(floor, newest or BUILD_FLOOR)
            source = (
                f"the journal's newest event ({_iso(newest)})"
                if newest
                else "the build date (the journal has no readable event)"
            )
            self.fallback = StateFallback(
                file=_FILE,
                problem=loaded.problem or "damaged",
                fallback=f"the time floor was taken from {source}: a clock set back still "
                "cannot revive an expired token",
                at=clock(),
                kept_as=loaded.kept_as,
                detail=loaded.detail,
            )
        self._base = floor
        self._mono = monotonic()
        self._written = floor
        self._saving = threading.Lock()
        self.check()  # a reading at start raises the floor when the clock is ahead of it
        if loaded.problem is not None:  # first start or a loss: the file exists from now on
            self._persist(self.floor())

    def floor(self) -> float:
        """The latest time known to have passed (stored floor + monotonic time since)."""
        return self._base + (self._monotonic() - self._mono)

    def check(self) -> tuple[bool, float, float]:
        """(trusted, wall-clock now, floor); a trusted reading raises the floor."""
        now = self._clock()
        mono = self._monotonic()
        floor = self._base + (mono - self._mono)
        if now >= floor:
            self._base, self._mono = now, mono
            return True, now, now
        return now >= floor - self.tolerance, now, floor

    def status(self) -> ClockStatus:
        trusted, now, floor = self.check()
        if trusted:
            detail = "clock at or after the time floor"
        else:
            detail = (
                f"clock is {floor - now:.0f} s behind the time floor: it was set back or lost "
                "its time (no NTP yet?)"
            )
        return ClockStatus(trusted=trusted, now=now, floor=floor, detail=detail)

    def persist_due(self) -> bool:
        """Write the floor when it has moved :data:`PERSIST_EVERY` seconds past what is on
        disk; True when it wrote. The daemon calls this from its clock check, on a worker
        thread: a decision never waits for this file's fsync."""
        floor = self.floor()
        if floor - self._written < PERSIST_EVERY:
            return False
        self._persist(floor)
        return True

    def _persist(self, value: float) -> None:
        with self._saving:  # persist_due (a worker thread) and flush (shutdown) may meet
            if value < self._written:
                return  # a later floor is on disk already
            if self._state.save(_FILE, {"floor": value}):
                self._written = value

    def flush(self) -> None:
        self.check()
        self._persist(self.floor())
