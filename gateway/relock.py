"""No late and no orphan openings: the door service locks again what nobody should find open.

Two cases, both for locks (a key safe's compartment cannot be closed from afar):

- **A late answer.** The door gave up on the lock (``phone_link.device_timeout``, or
  the device's ``command_timeout``): the phone (or the command's sender) heard
  ``device_unavailable`` and the journal says ``access.denied``. If the lock then
  unlocks anyway within :data:`LATE_WINDOW` seconds — the command reached it and it
  acted late — ``device.late_answer`` is journaled, attributed to that attempt (its
  event id, who, which command), and the lock is locked again at once. The lock is
  asked for its state now and then meanwhile (1, 2, 4, 8, 15 ... s after): its own
  notice of the late action may be lost with the link the door gave up on.
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
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from protocols.device import Action, DeviceKind, DeviceState
from protocols.errors import DeviceError
from protocols.events import DoorState, EventBody, LateAnswerEvent, LockState, RelockEvent

if TYPE_CHECKING:
    from gateway.devices import DeviceManager

__all__ = ["LATE_WINDOW", "Opening", "Relocker"]

log = structlog.get_logger("lockgw.door")

#: how long after a ``device_unavailable`` an unlock still counts as its late answer, s
LATE_WINDOW = 60.0
_OPEN = (LockState.UNLOCKED, LockState.UNLATCHED)
#: pauses before the second and third try to lock again (a slow lock, a link being rebuilt)
RELOCK_RETRY = (1.0, 3.0)


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
        #: per lock: the attempt given up on whose late answer is watched for
        self._late: dict[str, Opening] = {}
        #: per lock: the granted opening not used yet, and its timer
        self._unused: dict[str, tuple[Opening, asyncio.TimerHandle]] = {}
        self._last_lock: dict[str, LockState | None] = {}
        #: per lock: the task asking it for its state while a late answer may come
        self._looks: dict[str, asyncio.Task[None]] = {}

    # -- told by the door service ------------------------------------------------------------
    def gave_up(self, opening: Opening) -> None:
        """The door answered ``device_unavailable`` for this unlock: watch for it happening late."""
        if not self._is_lock(opening.device):
            return
        state = self.devices.states().get(opening.device)
        if state is not None and state.lock in _OPEN:
            return  # already open: a late answer would change nothing to see
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

    def granted(self, opening: Opening) -> None:
        """An unlock was confirmed: relock it if the door is not opened in time."""
        if not self._is_lock(opening.device):
            return
        self._late.pop(opening.device, None)  # it is open because someone was let in
        self._cancel_unused(opening.device)
        after = self._unused_after()
        if after <= 0:
            return
        handle = asyncio.get_running_loop().call_later(after, self._unused_due, opening)
        self._unused[opening.device] = (opening, handle)

    async def on_state(self, device: str, state: DeviceState) -> None:
        """Every new state of every device, in order (from the device manager)."""
        if state.kind is not DeviceKind.LOCK:
            return
        before = self._last_lock.get(device)
        self._last_lock[device] = state.lock
        if state.door is DoorState.OPEN:
            self._cancel_unused(device)  # somebody used it
        late = self._late.get(device)
        if late is not None and self._clock() - late.at > LATE_WINDOW:
            del self._late[device]
            late = None
        if late is not None and state.lock in _OPEN and before not in _OPEN:
            del self._late[device]
            self._spawn(self._late_answer(late, state))

    def close(self) -> None:
        """Stopping: no more relocks are started (one under way is door work and finishes)."""
        for device in list(self._unused):
            self._cancel_unused(device)
        self._late.clear()
        for task in self._looks.values():
            task.cancel()
        self._looks.clear()

    # -- the work --------------------------------------------------------------------------
    def _is_lock(self, device: str) -> bool:
        sup = self.devices.supervisors.get(device)
        return sup is not None and sup.kind is DeviceKind.LOCK

    def _cancel_unused(self, device: str) -> None:
        pending = self._unused.pop(device, None)
        if pending is not None:
            pending[1].cancel()

    def _unused_due(self, opening: Opening) -> None:
        if self._unused.get(opening.device, (None,))[0] is not opening:
            return
        del self._unused[opening.device]
        state = self.devices.states().get(opening.device)
        if state is None or state.lock not in _OPEN:
            return  # locked meanwhile (by hand, by the lock itself)
        if state.door is not DoorState.CLOSED:
            log.warning(
                "door.relock_skipped",
                door=opening.door,
                device=opening.device,
                attempt=opening.attempt,
                detail=f"the lock reports its door {state.door.value}: not locked again by itself",
            )
            return
        self._spawn(self._relock(opening, "not_opened"))

    async def _late_answer(self, opening: Opening, state: DeviceState) -> None:
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
        await self._relock(opening, "late_answer")

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
