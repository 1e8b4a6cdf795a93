"""One entry becomes one visit: grant → door opened → door closed → relocked / key returned.

A care manager and a resident want to read "the wijkverpleegkundige of Thuiszorg West
was in from 07:12 to 07:41, the door was locked behind her", not six device events.
The tracker follows each granted entry through the device's state snapshots and
publishes ``visit.started`` (at the grant) and ``visit.ended`` (when the door is shut
and relocked, or the key is back in the safe), with durations and anything wrong:

==========================  =================================================================
problem                     when
==========================  =================================================================
``door_not_opened``         nobody opened the door within ``no_entry_after`` of the grant
``door_left_open``          the door stayed open longer than the device's ``door_left_open_after``
``left_unlocked``           door shut but not relocked within ``relock_after``
``key_not_returned``        the key was not back ``key_not_returned_after`` after the opening
``visit_not_closed``        the visit was still open after ``max_duration``
``superseded``              a new entry at the same door began before this one ended
``gateway_stopped``         the gateway stopped during the visit
==========================  =================================================================

The tracker is driven by :meth:`on_state` (device snapshots, from the device manager)
and :meth:`tick` (deadlines, called once a second by :meth:`run`). Times come from an
injected clock so tests can step through a visit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog

from gateway.events import EventSink
from protocols.device import CompartmentState, DeviceKind, DeviceState, KeyState
from protocols.errors import JournalError
from protocols.events import DoorState, LockState, VisitEvent

__all__ = ["VisitLimits", "VisitTracker"]

log = structlog.get_logger("lockgw.visits")


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class VisitLimits:
    no_entry_after: float = 120.0
    relock_after: float = 300.0
    door_left_open_after: float = 300.0
    key_not_returned_after: float = 1800.0
    max_duration: float = 4 * 3600.0


@dataclass
class _Visit:
    id: str
    door: str
    device: str
    kind: DeviceKind
    who: dict[str, str | None]
    granted_at: float
    limits: VisitLimits
    door_opened: float | None = None
    door_closed: float | None = None
    relocked: bool | None = None
    key_taken: bool = False
    key_returned: bool | None = None
    compartment_closed: bool = False
    problems: list[str] = field(default_factory=list)

    def note(self, problem: str) -> None:
        if problem not in self.problems:
            self.problems.append(problem)


class VisitTracker:
    def __init__(
        self,
        sink: EventSink,
        *,
        limits: Callable[[str], VisitLimits] | None = None,
        clock: Callable[[], float] = time.time,
        on_ended: Callable[[str, list[str]], None] | None = None,
    ) -> None:
        """``on_ended(device, problems)`` is told of every visit that ends (the device's
        retained problems take ``left_unlocked`` from it)."""
        self.sink = sink
        self._on_ended = on_ended
        self._limits = limits or (lambda _device: VisitLimits())
        self.clock = clock
        self._by_device: dict[str, _Visit] = {}

    @property
    def active(self) -> int:
        return len(self._by_device)

    async def start(
        self,
        *,
        visit_id: str,
        door: str,
        device: str,
        kind: DeviceKind,
        iss: str | None,
        sub: str | None,
        role: str | None,
        purpose: str | None,
        state: DeviceState | None = None,
    ) -> None:
        """Called by the door service right after a granted, device-confirmed entry."""
        old = self._by_device.pop(device, None)
        if old is not None:
            old.note("superseded")
            await self._end(old)
        now = self.clock()
        visit = _Visit(
            id=visit_id,
            door=door,
            device=device,
            kind=kind,
            who={"iss": iss, "sub": sub, "role": role, "purpose": purpose},
            granted_at=now,
            limits=self._limits(device),
        )
        if kind is DeviceKind.KEYSAFE and state is not None:
            visit.compartment_closed = state.compartment is CompartmentState.CLOSED
        self._by_device[device] = visit
        await self._emit(visit, "visit.started")

    async def on_state(self, device: str, state: DeviceState) -> None:
        visit = self._by_device.get(device)
        if visit is None:
            return
        now = self.clock()
        if visit.kind is DeviceKind.LOCK:
            if state.door is DoorState.OPEN and visit.door_opened is None:
                visit.door_opened = now
            elif state.door is DoorState.CLOSED and visit.door_opened is not None:
                visit.door_closed = visit.door_closed or now
            if state.lock is LockState.JAMMED:
                visit.note("lock_jammed")
            if state.lock is LockState.LOCKED and (
                visit.door_closed is not None or (visit.door_opened is None and now > visit.granted_at)
            ):
                visit.relocked = True
                if visit.door_opened is None:
                    visit.note("door_not_opened")
                await self._finish(visit)
        else:
            if state.compartment is CompartmentState.OPEN:
                visit.door_opened = visit.door_opened or now
                visit.compartment_closed = False
            elif state.compartment is CompartmentState.CLOSED and visit.door_opened is not None:
                visit.door_closed = now
                visit.compartment_closed = True
            if state.key is KeyState.ABSENT:
                visit.key_taken = True
            elif state.key is KeyState.PRESENT and visit.key_taken:
                visit.key_returned = True
            if visit.compartment_closed and visit.door_opened is not None and (
                visit.key_returned or not visit.key_taken
            ):
                if visit.key_taken is False:
                    visit.key_returned = None
                await self._finish(visit)

    async def tick(self) -> None:
        """Check deadlines; called every second by :meth:`run`."""
        now = self.clock()
        for visit in list(self._by_device.values()):
            lim = visit.limits
            age = now - visit.granted_at
            if visit.door_opened is None and age > lim.no_entry_after:
                visit.note("door_not_opened")
                await self._finish(visit)
            elif visit.kind is DeviceKind.LOCK:
                if (
                    visit.door_opened is not None
                    and visit.door_closed is None
                    and now - visit.door_opened > lim.door_left_open_after
                ):
                    visit.note("door_left_open")
                if visit.door_closed is not None and now - visit.door_closed > lim.relock_after:
                    visit.relocked = False
                    visit.note("left_unlocked")
                    await self._finish(visit)
            elif (
                visit.key_taken
                and not visit.key_returned
                and visit.door_opened is not None
                and now - visit.door_opened > lim.key_not_returned_after
            ):
                visit.key_returned = False
                visit.note("key_not_returned")
                await self._finish(visit)
            if visit.device in self._by_device and age > lim.max_duration:
                visit.note("visit_not_closed")
                await self._finish(visit)

    async def run(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.tick()

    async def close(self) -> None:
        """Gateway stopping: end every open visit honestly."""
        for visit in list(self._by_device.values()):
            visit.note("gateway_stopped")
            await self._finish(visit)

    async def _finish(self, visit: _Visit) -> None:
        if self._by_device.get(visit.device) is visit:
            del self._by_device[visit.device]
            await self._end(visit)

    async def _end(self, visit: _Visit) -> None:
        await self._emit(visit, "visit.ended")
        if self._on_ended is not None:
            self._on_ended(visit.device, list(visit.problems))

    async def _emit(self, visit: _Visit, kind: str) -> None:
        ended = kind == "visit.ended"
        body = VisitEvent(
            type=kind,  # type: ignore[arg-type]
            visit=visit.id,
            door=visit.door,
            device=visit.device,
            iss=visit.who["iss"],
            sub=visit.who["sub"],
            role=visit.who["role"],
            purpose=visit.who["purpose"],
            opened=_iso(visit.granted_at),
            door_opened=_iso(visit.door_opened) if visit.door_opened else None,
            door_closed=_iso(visit.door_closed) if visit.door_closed else None,
            relocked=visit.relocked if visit.kind is DeviceKind.LOCK else None,
            key_returned=visit.key_returned if visit.kind is DeviceKind.KEYSAFE else None,
            duration_s=round(self.clock() - visit.granted_at, 3) if ended else None,
            problems=list(visit.problems) if ended else [],
        )
        try:
            await self.sink.emit(body)
        except JournalError as exc:
            log.error("visit.unjournaled", visit=visit.id, error=str(exc))
