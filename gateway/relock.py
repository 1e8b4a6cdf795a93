"""No late and no orphan openings: the door service locks again what nobody should find open.

Two cases, both for locks (a key safe's compartment cannot be closed from afar):

- **A late answer.** The door gave up on the lock (``phone_link.device_timeout``, or
  the device's ``command_timeout``): the phone (or the command's sender) heard
  ``device_unavailable`` and the journal says ``access.denied``. If the lock then
  unlocks anyway within :data:`LATE_WINDOW` seconds — the command reached it and it
  acted late — ``device.late_answer`` is journaled, attributed to that attempt (its
  event id, who, which command), and the lock is locked again at once. The lock is
  asked for its state now and then meanwhile (1, 2, 4, 8, 15 ... s after): its own
  notice of the late action may be lost with the link the door gave up on. A lock that
  is already open when the door gives up, but was not when the command went out, acted
  on it and only its answer was late (its state notice came first): that is the late
  answer too, at once. While the door has a command under way at the lock, an unlock
  it reports is that command's (:meth:`Relocker.sending`): a granted one belongs to the
  carer just let in, never to an earlier attempt's late answer.
- **An opening nobody used.** A granted unlock (a phone, or a remote opening by the
  alarm centre) after which the door was not opened within ``[access]
  relock_unused_after`` seconds (default 30; 0 turns it off) while the lock reports
  its door contact closed: the lock is locked again (``door.relocked``, ``why:
  not_opened``). A lock that reports no door contact (``door: unknown``) is not
  relocked this way — nobody can tell whether someone stands in the doorway — and
  this is logged (``door.relock_skipped``).

When locking again fails (no answer, jammed; three tries, :data:`RELOCK_RETRY`
apart), ``door.left_unlocked`` is journaled and
published, and the lock carries the ``left_unlocked`` problem (health, the retained
device state) until it reports ``locked`` again.

**Across a stop or a crash.** The timers above live in memory; what they wait for is
in the journal. At start the gateway reads it back (:func:`unfinished_openings`: the
events of the last :data:`RESUME_WITHIN` seconds, by the journal's time index) and
finds, per lock, the openings it made that were still waiting when it stopped (SIGTERM,
``kill -9``, a power cut): a granted unlock, a ``device.late_answer``, or an unlock the
door gave up on less than :data:`LATE_WINDOW` ago, with no later event saying the lock
was locked (``lock.state`` locked, ``door.relocked``, a visit ended ``relocked``) or the
door was used (``lock.state`` door open, a visit with ``door_opened``). A
``door.left_unlocked`` does not end it: the relock is tried again. Each is picked up
where it was (:meth:`Relocker.resume`): an unused opening waits for the rest of its
``relock_unused_after`` (counted from its journaled time), then, once the lock answers,
it is relocked if still unlocked with the door contact closed (``why:
not_opened_before_restart``; a journaled late answer: ``late_answer_before_restart``,
also with the contact unknown, as live) — through the same relock and
``door.left_unlocked`` path as live. An unlock the door gave up on less than
:data:`LATE_WINDOW` before the start: found unlocked, the lock acted while the gateway
was away — ``device.late_answer`` is journaled and it is relocked (``why:
late_answer_before_restart``); found locked, the live watch goes on for the rest of its
minute. A lock found locked needs nothing; a door found open is used (not relocked).
While a lock with an opening waiting cannot be reached after the start, it carries the
``left_unlocked`` problem (health, the retained state) until it reports ``locked``.
A lock unlocked by hand (the thumb-turn) is never relocked this way: only openings the
journal attributes to the gateway are, and a ``lock.state`` locked after one ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import structlog

from protocols.device import Action, DeviceKind, DeviceState
from protocols.errors import DeviceError, JournalError, Reason
from protocols.events import (
    AccessDecisionEvent,
    DoorState,
    Envelope,
    EventBody,
    LateAnswerEvent,
    LockState,
    LockStateEvent,
    RelockEvent,
    VisitEvent,
)

if TYPE_CHECKING:
    from gateway.devices import DeviceManager
    from gateway.journal import Journal

__all__ = [
    "LATE_WINDOW",
    "RESUME_WITHIN",
    "Opening",
    "Relocker",
    "Unfinished",
    "unfinished",
    "unfinished_openings",
]

log = structlog.get_logger("lockgw.door")

#: how long after a ``device_unavailable`` an unlock still counts as its late answer, s
LATE_WINDOW = 60.0
_OPEN = (LockState.UNLOCKED, LockState.UNLATCHED)
#: pauses before the second and third try to lock again (a slow lock, a link being rebuilt)
RELOCK_RETRY = (1.0, 3.0)
#: how far back (s) the journal is read at start for openings still waiting for their
#: relock: a stop longer than this forgets them (the lock may have been used by hand
#: meanwhile without the gateway seeing it)
RESUME_WITHIN = 12 * 3600.0
#: the event types :func:`unfinished` looks at (the query filters on them)
_RESUME_TYPES = (
    "access.granted",
    "access.denied",
    "lock.state",
    "device.late_answer",
    "door.relocked",
    "visit.ended",
)
#: why a relock after a restart happened (``RelockEvent.why``), by what was waiting
_WHY_AFTER_RESTART = {
    "unused": "not_opened_before_restart",
    "late_answer": "late_answer_before_restart",
    "late_watch": "late_answer_before_restart",
}


@dataclass(frozen=True, slots=True)
class Opening:
    """One attempt to unlock (granted, or given up on): who, where, and its event id."""

    attempt: str
    door: str
    device: str
    action: str
    at: float
    iss: str | None = None
    sub: str | None = None
    actor: str | None = None
    request_id: str | None = None


Waiting = Literal["unused", "late_answer", "late_watch"]


@dataclass(frozen=True, slots=True)
class Unfinished:
    """An opening the journal says was still waiting when the gateway stopped: an unused
    granted unlock, a late answer not yet relocked, or an unlock given up on whose late
    answer was still watched for. ``ts``: its event's time (epoch seconds)."""

    opening: Opening
    waiting: Waiting
    ts: float


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


def unfinished(events: Iterable[Envelope]) -> list[Unfinished]:
    """The openings still waiting at the end of ``events`` (in ``seq`` order), one per
    lock at most (the newest). Pure: the rules of the module docstring."""
    waiting: dict[str, Unfinished] = {}
    last: dict[str, LockState] = {}  # each lock's last journaled bolt state
    for env in events:
        b = env.body
        if isinstance(b, AccessDecisionEvent):
            if b.device is None:
                continue
            if b.action in (Action.UNLOCK.value, Action.UNLATCH.value):
                opening = Opening(
                    attempt=env.id, door=b.door, device=b.device, action=b.action, at=0.0,
                    iss=b.iss, sub=b.sub, actor=b.actor, request_id=b.request_id,
                )  # fmt: skip
                if b.type == "access.granted":
                    waiting[b.device] = Unfinished(opening, "unused", _epoch(env.ts))
                elif (
                    b.reason == Reason.DEVICE_UNAVAILABLE.value
                    and b.device not in waiting
                    and last.get(b.device) not in _OPEN
                ):  # as live (Relocker.gave_up): a lock already open is not watched
                    waiting[b.device] = Unfinished(opening, "late_watch", _epoch(env.ts))
            elif b.type == "access.granted" and b.action == Action.LOCK.value:
                waiting.pop(b.device, None)
        elif isinstance(b, LateAnswerEvent):
            opening = Opening(
                attempt=b.attempt, door=b.door, device=b.device, action=b.action, at=0.0,
                iss=b.iss, sub=b.sub, actor=b.actor, request_id=b.request_id,
            )  # fmt: skip
            waiting[b.device] = Unfinished(opening, "late_answer", _epoch(env.ts))
        elif isinstance(b, LockStateEvent):
            last[b.device] = b.lock
            if b.lock is LockState.LOCKED or b.door_state is DoorState.OPEN:
                waiting.pop(b.device, None)  # locked (by anyone), or the door was used
        elif isinstance(b, RelockEvent):
            w = waiting.get(b.device)
            if b.type == "door.relocked" and w is not None and w.opening.attempt == b.attempt:
                del waiting[b.device]
        elif isinstance(b, VisitEvent) and b.type == "visit.ended" and b.device is not None:
            w = waiting.get(b.device)
            used = b.relocked is True or b.door_opened is not None
            if used and w is not None and w.opening.attempt == b.visit:
                del waiting[b.device]
    return list(waiting.values())


async def unfinished_openings(journal: Journal, now: float | None = None) -> list[Unfinished]:
    """:func:`unfinished` over the journal's tail from its first row of the last
    :data:`RESUME_WITHIN` seconds (found by the time index; the tail read by ``seq``, the
    primary key, filtered by type: the rows before it are not scanned). A journal that
    cannot be read: none (logged)."""
    now = time.time() if now is None else now
    since = datetime.fromtimestamp(now - RESUME_WITHIN, UTC)
    try:
        first = await journal.first_seq_since(since)
        if first is None:
            return []
        # the tail from there, by seq (the primary key): a later row with an older ts (a
        # clock set back, events replayed from the fallback) is read too
        rows = await journal.read(after_seq=first - 1, types=_RESUME_TYPES)
    except JournalError as exc:
        log.error("door.resume_unreadable", error=str(exc))
        return []
    return unfinished(rows)


class Relocker:
    """See the module docstring. ``emit`` journals an event; ``spawn`` runs a coroutine
    to its end as door work (the door service waits for it when stopping)."""

    def __init__(
        self,
        devices: DeviceManager,
        emit: Callable[[EventBody], Awaitable[str]],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        *,
        unused_after: Callable[[], float],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.devices = devices
        self._emit = emit
        self._spawn = spawn
        self._unused_after = unused_after
        self._clock = clock
        #: when each lock's last granted unlock was confirmed (gave_up: whose opening is it)
        self._last_grant: dict[str, float] = {}
        #: per lock: the attempt given up on whose late answer is watched for
        self._late: dict[str, Opening] = {}
        #: per lock: the granted opening not used yet, and its timer
        self._unused: dict[str, tuple[Opening, asyncio.TimerHandle]] = {}
        self._last_lock: dict[str, LockState | None] = {}
        #: per lock: the task asking it for its state while a late answer may come
        self._looks: dict[str, asyncio.Task[None]] = {}
        #: per lock: an opening from before a restart, due, waiting for the lock to answer
        self._resumed: dict[str, asyncio.Task[None]] = {}
        #: per lock: the door's commands under way, and the bolt before the first of them
        #: (their own outcome explains an unlock seen meanwhile: :meth:`sending`)
        self._sending: dict[str, tuple[int, LockState | None]] = {}

    # -- told by the door service ------------------------------------------------------------
    def gave_up(
        self, opening: Opening, lock_before: LockState | None = None, sent_at: float = 0.0
    ) -> None:
        """The door answered ``device_unavailable`` for this unlock: watch for it happening
        late. ``lock_before``: the lock's state when the command was sent (at ``sent_at``,
        this relocker's clock). A lock open now that was not open then, and that no other
        attempt's granted unlock has opened since, acted on this very command and its answer
        was what came too late (its state notice beat it): the late answer is already here,
        and is relocked."""
        if not self._is_lock(opening.device):
            return
        state = self.devices.states().get(opening.device)
        if state is not None and state.lock in _OPEN:
            if lock_before is None or lock_before in _OPEN:
                return  # open before this attempt: nothing of its own to undo
            if self._last_grant.get(opening.device, float("-inf")) >= sent_at:
                return  # another carer's unlock, granted meanwhile, opened it
            self._late.pop(opening.device, None)
            self._spawn(self._late_answer(opening, state))
            return
        if opening.device not in self._late:  # the first command sent acts first
            self._late[opening.device] = opening
            old = self._looks.pop(opening.device, None)
            if old is not None:
                old.cancel()
            self._looks[opening.device] = asyncio.create_task(self._look_late(opening))

    async def _look_late(self, opening: Opening) -> None:
        """Ask the lock for its state now and then while a late answer may come: its own
        notice of it can be lost with the link the door gave up on."""
        delay = 1.0
        while self._late.get(opening.device) is opening:
            if self._clock() - opening.at > LATE_WINDOW:
                del self._late[opening.device]
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 15.0)
            if self._late.get(opening.device) is not opening:
                return
            try:
                await self.devices.refresh(opening.door)  # a new state comes to on_state
            except DeviceError:
                continue

    @contextlib.contextmanager
    def sending(self, device: str) -> Iterator[None]:
        """The door sends ``device`` a command inside, until the relocker has heard its
        outcome (:meth:`granted`, :meth:`gave_up`): an unlock the lock reports meanwhile is
        that command's, not the late answer of an attempt given up on before — whose relock
        would lock the door on the carer just let in. An unlock neither explains (the
        command failed otherwise) is that earlier attempt's after all, when the last
        command ends."""
        count, before = self._sending.get(device, (0, self._last_lock.get(device)))
        self._sending[device] = (count + 1, before)
        try:
            yield
        finally:
            count, before = self._sending.pop(device)
            if count > 1:
                self._sending[device] = (count - 1, before)
            else:
                state = self.devices.states().get(device)
                if state is not None and before not in _OPEN:
                    self._late_seen(device, state)

    def granted(self, opening: Opening) -> None:
        """An unlock was confirmed: relock it if the door is not opened in time."""
        if not self._is_lock(opening.device):
            return
        self._last_grant[opening.device] = self._clock()
        self._late.pop(opening.device, None)  # it is open because someone was let in
        self._cancel_unused(opening.device)
        after = self._unused_after()
        if after <= 0:
            return
        handle = asyncio.get_running_loop().call_later(after, self._unused_due, opening)
        self._unused[opening.device] = (opening, handle)

    def resume(self, left: Unfinished, now: float | None = None) -> None:
        """An opening still waiting when the gateway stopped (:func:`unfinished_openings`):
        wait for what was left of its time, then relock it if the lock answers unlocked
        (see the module docstring)."""
        opening = left.opening
        if not self._is_lock(opening.device):
            return
        age = max(0.0, (time.time() if now is None else now) - left.ts)
        log.info(
            "door.relock_resumed",
            door=opening.door,
            device=opening.device,
            attempt=opening.attempt,
            waiting=left.waiting,
            age_s=round(age, 1),
        )
        if left.waiting == "late_watch":
            if age >= LATE_WINDOW:
                return  # its minute is over: an unlock seen now is nobody's the journal knows
            opening = replace(opening, at=self._clock() - age)
        delay = 0.0
        if left.waiting == "unused":
            after = self._unused_after()
            if after <= 0:
                return
            delay = max(0.0, after - age)
        self._cancel_unused(opening.device)
        handle = asyncio.get_running_loop().call_later(
            delay, self._resumed_due, opening, left.waiting
        )
        self._unused[opening.device] = (opening, handle)

    def _resumed_due(self, opening: Opening, waiting: Waiting) -> None:
        if self._unused.get(opening.device, (None,))[0] is not opening:
            return  # used, or a new opening since
        del self._unused[opening.device]
        old = self._resumed.pop(opening.device, None)
        if old is not None:
            old.cancel()
        self._resumed[opening.device] = asyncio.create_task(self._ask_then_relock(opening, waiting))

    async def _ask_then_relock(self, opening: Opening, waiting: Waiting) -> None:
        """Once the lock answers (asked now and then until it does), relock what is left
        unlocked: the live path (:meth:`_relock_unused`)."""
        sup = self.devices.supervisors[opening.device]
        delay = 1.0
        while True:
            try:
                state = await sup.refresh()
                break
            except DeviceError as exc:
                if delay == 1.0 and waiting != "late_watch":
                    # the gateway's own opening, and no way to see it locked: health and
                    # the retained state say left_unlocked until the lock reports locked
                    log.warning("door.relock_waiting", door=opening.door, device=opening.device,
                                attempt=opening.attempt, detail=exc.detail or str(exc))  # fmt: skip
                    self.devices.mark_left_unlocked(opening.device)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 15.0)
        if self._resumed.get(opening.device) is asyncio.current_task():
            del self._resumed[opening.device]
        if waiting == "late_watch":
            if state.lock not in _OPEN:  # not yet: the live watch goes on for the rest
                if self._clock() - opening.at < LATE_WINDOW:
                    self.gave_up(opening)
                return
            await self._journal_late(opening, state)  # it acted while the gateway was away
            waiting = "late_answer"
        self._relock_unused(
            opening,
            state,
            _WHY_AFTER_RESTART[waiting],
            contact_needed=waiting == "unused",
        )

    async def on_state(self, device: str, state: DeviceState) -> None:
        """Every new state of every device, in order (from the device manager)."""
        if state.kind is not DeviceKind.LOCK:
            return
        before = self._last_lock.get(device)
        self._last_lock[device] = state.lock
        if state.door is DoorState.OPEN:
            self._cancel_unused(device)  # somebody used it
        if device in self._sending:
            return  # a command under way: its own outcome says whose an unlock is
        if before not in _OPEN:
            self._late_seen(device, state)

    def _late_seen(self, device: str, state: DeviceState) -> None:
        """``state`` after a lock that was not open: the late answer a watch waits for?"""
        late = self._late.get(device)
        if late is not None and self._clock() - late.at > LATE_WINDOW:
            del self._late[device]
            late = None
        if late is not None and state.lock in _OPEN:
            del self._late[device]
            self._spawn(self._late_answer(late, state))

    def close(self) -> None:
        """Stopping: no more relocks are started (one under way is door work and finishes)."""
        for device in list(self._unused):
            self._cancel_unused(device)
        self._late.clear()
        for task in [*self._looks.values(), *self._resumed.values()]:
            task.cancel()
        self._looks.clear()
        self._resumed.clear()

    # -- the work --------------------------------------------------------------------------
    def _is_lock(self, device: str) -> bool:
        sup = self.devices.supervisors.get(device)
        return sup is not None and sup.kind is DeviceKind.LOCK

    def _cancel_unused(self, device: str) -> None:
        """Forget the opening waiting at ``device`` (used, or a new one): its timer, and the
        lock being asked for an opening from before a restart."""
        pending = self._unused.pop(device, None)
        if pending is not None:
            pending[1].cancel()
        asking = self._resumed.pop(device, None)
        if asking is not None:
            asking.cancel()

    def _unused_due(self, opening: Opening) -> None:
        if self._unused.get(opening.device, (None,))[0] is not opening:
            return
        del self._unused[opening.device]
        self._relock_unused(opening, self.devices.states().get(opening.device), "not_opened")

    def _relock_unused(
        self,
        opening: Opening,
        state: DeviceState | None,
        why: str,
        *,
        contact_needed: bool = True,
    ) -> None:
        """Relock ``opening``'s lock if ``state`` says it is still open and its door contact
        closed (``contact_needed=False``: not known open, as for a late answer)."""
        if state is None or state.lock not in _OPEN:
            log.debug("door.relock_not_needed", door=opening.door, device=opening.device,
                      attempt=opening.attempt, why=why)  # fmt: skip
            return  # locked meanwhile (by hand, by the lock itself)
        if state.door is DoorState.OPEN or (contact_needed and state.door is not DoorState.CLOSED):
            log.warning(
                "door.relock_skipped",
                door=opening.door,
                device=opening.device,
                attempt=opening.attempt,
                why=why,
                detail=f"the lock reports its door {state.door.value}: not locked again by itself",
            )
            return
        self._spawn(self._relock(opening, why))

    async def _late_answer(self, opening: Opening, state: DeviceState) -> None:
        await self._journal_late(opening, state)
        await self._relock(opening, "late_answer")

    async def _journal_late(self, opening: Opening, state: DeviceState) -> None:
        log.warning(
            "door.late_answer", door=opening.door, device=opening.device, attempt=opening.attempt
        )
        await self._emit(
            LateAnswerEvent(
                door=opening.door,
                device=opening.device,
                action=opening.action,
                attempt=opening.attempt,
                lock=state.lock.value if state.lock is not None else None,
                iss=opening.iss,
                sub=opening.sub,
                actor=opening.actor,
                request_id=opening.request_id,
            )
        )

    async def _relock(self, opening: Opening, why: str) -> None:
        detail: str | None = None
        for attempt, pause in enumerate((0.0, *RELOCK_RETRY)):
            if pause:
                await asyncio.sleep(pause)
                state = self.devices.states().get(opening.device)
                if state is not None and state.lock is LockState.LOCKED:
                    detail = None  # the last try was answered late, or someone locked it
                    break
            detail = await self._lock_once(opening)
            if detail is None:
                break
            log.warning("door.relock_failed", door=opening.door, device=opening.device,
                        attempt=attempt + 1, detail=detail)  # fmt: skip
        kind = "door.relocked" if detail is None else "door.left_unlocked"
        (log.info if detail is None else log.error)(
            kind, door=opening.door, device=opening.device, why=why, detail=detail
        )
        await self._emit(
            RelockEvent(
                type=kind,  # type: ignore[arg-type]
                door=opening.door,
                device=opening.device,
                why=why,  # type: ignore[arg-type]
                attempt=opening.attempt,
                detail=detail,
                iss=opening.iss,
                sub=opening.sub,
                actor=opening.actor,
                request_id=opening.request_id,
            )
        )
        if detail is not None:
            self.devices.mark_left_unlocked(opening.device)

    async def _lock_once(self, opening: Opening) -> str | None:
        """Lock ``opening``'s lock; None when it reports locked, else why not."""
        try:
            if self.devices.device_for(opening.door, Action.LOCK) != opening.device:
                raise DeviceError(opening.device, "another device locks this door")
            state = await self.devices.execute(opening.door, Action.LOCK)
        except DeviceError as exc:
            return exc.detail or str(exc)
        if state.lock is not LockState.LOCKED:
            return f"the lock answered {state.lock.value if state.lock else 'unknown'}"
        return None
