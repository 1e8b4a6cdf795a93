"""Which openings the journal says were still waiting for their relock when the gateway
stopped (``gateway.relock.unfinished``): the rules, one journal at a time. The whole
path with real processes (a kill, a clean stop, a used door, a thumb-turn, a jam) is in
tests/test_door_relock.py."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gateway.relock import LATE_WINDOW, Opening, Relocker, Unfinished, unfinished
from gateway.words import People, describe
from protocols.device import Action, DeviceKind, DeviceState
from protocols.errors import DeviceUnavailable
from protocols.events import (
    AccessDecisionEvent,
    Channel,
    DoorState,
    Envelope,
    EventBody,
    GatewayEvent,
    LateAnswerEvent,
    LockState,
    LockStateEvent,
    RelockEvent,
    VisitEvent,
)
from protocols.i18n import language


def journal(*bodies: EventBody) -> list[Envelope]:
    return [
        Envelope(id=f"e{i}", seq=i, ts=f"2026-12-07T05:00:{i:02d}.000Z", site="s", body=b)
        for i, b in enumerate(bodies, start=1)
    ]


def decision(
    kind: str = "access.granted", *, action: str = "unlock", **kw: Any
) -> AccessDecisionEvent:
    reason = kw.pop("reason", "ok" if kind == "access.granted" else "device_unavailable")
    return AccessDecisionEvent(
        type=kind,  # type: ignore[arg-type]
        door="front",
        device=kw.pop("device", "front-lock"),
        action=action,
        channel=Channel.PHONE,
        reason=reason,
        sub="anna",
        **kw,
    )


def lock(
    state: LockState, door: DoorState = DoorState.CLOSED, device: str = "front-lock"
) -> LockStateEvent:
    return LockStateEvent(device=device, door="front", lock=state, door_state=door)


def relock(kind: str, attempt: str) -> RelockEvent:
    return RelockEvent(
        type=kind,
        door="front",
        device="front-lock",
        why="not_opened",
        attempt=attempt,  # type: ignore[arg-type]
    )


def waiting(events: list[Envelope]) -> list[tuple[str, str, str]]:
    return [(u.opening.device, u.opening.attempt, u.waiting) for u in unfinished(events)]


def test_a_granted_unlock_with_nothing_after_it_waits() -> None:
    rows = journal(
        lock(LockState.UNLOCKED), decision(), GatewayEvent(type="gateway.stopping", version="1")
    )
    assert waiting(rows) == [("front-lock", "e2", "unused")]
    (u,) = unfinished(rows)
    assert u.opening.sub == "anna" and u.opening.door == "front" and u.ts > 0


def test_locked_used_or_relocked_ends_it() -> None:
    assert waiting(journal(decision(), lock(LockState.LOCKED))) == []
    assert waiting(journal(decision(), lock(LockState.UNLOCKED, DoorState.OPEN))) == []
    assert waiting(journal(decision(), relock("door.relocked", "e1"))) == []
    ended = VisitEvent(
        type="visit.ended", visit="e1", device="front-lock", door="front", relocked=True
    )
    assert waiting(journal(decision(), ended)) == []
    assert waiting(journal(decision(), decision(action="lock"))) == []


def test_a_failed_relock_or_a_visit_ended_by_the_stop_does_not_end_it() -> None:
    stopped = VisitEvent(
        type="visit.ended",
        visit="e1",
        device="front-lock",
        door="front",
        problems=["gateway_stopped"],
    )
    rows = journal(decision(), relock("door.left_unlocked", "e1"), stopped)
    assert waiting(rows) == [("front-lock", "e1", "unused")]


def test_a_relock_of_another_opening_or_another_lock_does_not_end_it() -> None:
    rows = journal(
        decision(), relock("door.relocked", "older"), lock(LockState.LOCKED, device="back-lock")
    )
    assert waiting(rows) == [("front-lock", "e1", "unused")]


def test_an_unlock_by_hand_after_the_gateways_opening_was_locked_is_nobodys() -> None:
    rows = journal(decision(), lock(LockState.LOCKED), lock(LockState.UNLOCKED))
    assert waiting(rows) == []


def test_the_newest_opening_per_lock_and_denials_do_not_count() -> None:
    rows = journal(
        decision(),
        decision(),
        decision("access.denied", reason="expired"),
        decision(device="back-lock"),
        decision(action="open", device="safe"),  # a key safe's compartment: never relocked
    )
    assert sorted(waiting(rows)) == [("back-lock", "e4", "unused"), ("front-lock", "e2", "unused")]


def test_late_answers_and_watches() -> None:
    late = LateAnswerEvent(
        door="front", device="front-lock", action="unlock", attempt="e1", sub="anna"
    )
    # a late answer journaled, the gateway gone before its relock
    assert waiting(journal(decision("access.denied"), lock(LockState.UNLOCKED), late)) == [
        ("front-lock", "e1", "late_answer")
    ]
    # the late answer relocked
    rows = journal(decision("access.denied"), late, relock("door.relocked", "e1"))
    assert waiting(rows) == []
    # the door gave up, nothing since: the watch was running
    assert waiting(journal(decision("access.denied"))) == [("front-lock", "e1", "late_watch")]
    # ... unless the lock reported locked after it
    assert waiting(journal(decision("access.denied"), lock(LockState.LOCKED))) == []
    # a granted opening waiting is not replaced by a later denial (the lock is open already)
    assert waiting(journal(decision(), decision("access.denied"))) == [
        ("front-lock", "e1", "unused")
    ]


def test_a_lock_already_open_when_the_door_gave_up_is_not_watched() -> None:
    """As live: an unlock given up on at a lock that was open already cannot be told
    from what was there before."""
    rows = journal(lock(LockState.UNLOCKED), decision("access.denied"))
    assert waiting(rows) == []


# -- Relocker.resume against a lock that answers as told (no processes) ---------------------


class _Sup:
    kind = DeviceKind.LOCK

    def __init__(self, lock: _Lock) -> None:
        self._lock = lock

    async def refresh(self) -> DeviceState:
        if self._lock.offline:
            self._lock.offline -= 1
            raise DeviceUnavailable("front-lock", "not reached")
        return self._lock.state


class _Lock:
    """The part of DeviceManager the relocker uses, for one lock at ``front``."""

    def __init__(self, lock: LockState, door: DoorState = DoorState.CLOSED) -> None:
        self.state = DeviceState(kind=DeviceKind.LOCK, lock=lock, door=door)
        self.offline = 0
        self.supervisors = {"front-lock": _Sup(self)}
        self.left: list[str] = []

    def states(self) -> dict[str, DeviceState]:
        return {"front-lock": self.state}

    def device_for(self, door: str, action: Action) -> str:
        return "front-lock"

    async def execute(self, door: str, action: Action) -> DeviceState:
        assert action is Action.LOCK
        self.state = self.state.model_copy(update={"lock": LockState.LOCKED})
        return self.state

    def mark_left_unlocked(self, device: str) -> None:
        self.left.append(device)


def _relocker(
    lock: _Lock, unused_after: float
) -> tuple[Relocker, list[EventBody], list[asyncio.Task[None]]]:
    """A relocker at ``lock``: what it journals goes to the list, the work it spawns to
    the tasks."""
    out: list[EventBody] = []
    work: list[asyncio.Task[None]] = []

    async def emit(body: EventBody) -> str:
        out.append(body)
        return "id"

    relocker = Relocker(
        lock,  # type: ignore[arg-type]
        emit,
        lambda c: work.append(asyncio.create_task(c)),
        unused_after=lambda: unused_after,
    )
    return relocker, out, work


async def _resumed(
    lock: _Lock, left: Unfinished, *, unused_after: float = 0.1, then: Any = None
) -> tuple[list[EventBody], Relocker]:
    """Resume ``left`` and let it run out: the events the relocker journaled."""
    relocker, out, work = _relocker(lock, unused_after)
    relocker.resume(left)
    if then is not None:  # once the lock is being asked
        async with asyncio.timeout(30):
            while not relocker._resumed:  # noqa: ASYNC110 - the relocker's own task
                await asyncio.sleep(0.01)
        then(relocker)
    async with asyncio.timeout(30):  # a hung relocker fails, nothing is timed
        while relocker._unused or relocker._resumed or relocker._looks:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        await asyncio.gather(*work)
    relocker.close()
    return out, relocker


def _left(waiting: Any = "unused", age: float = 0.0) -> Unfinished:
    opening = Opening(
        attempt="a1", door="front", device="front-lock", action="unlock", at=0.0, sub="anna"
    )
    return Unfinished(opening, waiting, time.time() - age)


async def test_resumed_unused_opening_is_relocked_after_the_rest_of_its_window() -> None:
    lock = _Lock(LockState.UNLOCKED)
    lock.offline = 1  # not reached at first: asked again
    out, _ = await _resumed(lock, _left(age=0.0), unused_after=0.2)
    assert [(b.type, getattr(b, "why", None)) for b in out] == [
        ("door.relocked", "not_opened_before_restart")
    ]
    assert lock.state.lock is LockState.LOCKED
    assert lock.left == ["front-lock"]  # said left unlocked while it could not be asked


async def test_resumed_opening_found_locked_or_door_open_or_unknown_is_left_alone() -> None:
    for state, door in [
        (LockState.LOCKED, DoorState.CLOSED),
        (LockState.UNLOCKED, DoorState.OPEN),
        (LockState.UNLOCKED, DoorState.UNKNOWN),
    ]:
        lock = _Lock(state, door)
        out, _ = await _resumed(lock, _left(age=60))
        assert out == [] and lock.state.lock is state


async def test_resumed_opening_is_not_relocked_when_relocking_is_off() -> None:
    lock = _Lock(LockState.UNLOCKED)
    out, _ = await _resumed(lock, _left(age=60), unused_after=0)
    assert out == [] and lock.state.lock is LockState.UNLOCKED


async def test_a_new_opening_at_the_lock_replaces_the_resumed_one() -> None:
    """A carer let in while the relocker still waits for the lock to answer about an old
    opening: the old one is not relocked under her (her own opening has its own timer)."""
    lock = _Lock(LockState.UNLOCKED)
    lock.offline = 1  # the old opening's question waits a second for a second try
    new = Opening(attempt="a2", door="front", device="front-lock", action="unlock", at=0.0)
    out, _ = await _resumed(lock, _left(age=60), unused_after=2, then=lambda r: r.granted(new))
    assert [(b.type, getattr(b, "attempt", None), getattr(b, "why", None)) for b in out] == [
        ("door.relocked", "a2", "not_opened")
    ]


async def test_resumed_late_watch_found_unlocked_is_a_late_answer_relocked() -> None:
    lock = _Lock(LockState.UNLOCKED, DoorState.UNKNOWN)
    out, _ = await _resumed(lock, _left("late_watch", age=5))
    assert [b.type for b in out] == ["device.late_answer", "door.relocked"]
    assert isinstance(out[1], RelockEvent) and out[1].why == "late_answer_before_restart"


async def test_resumed_late_watch_older_than_its_minute_is_dropped() -> None:
    lock = _Lock(LockState.UNLOCKED)
    out, _ = await _resumed(lock, _left("late_watch", age=LATE_WINDOW + 1))
    assert out == [] and lock.state.lock is LockState.UNLOCKED


def test_relocks_in_words_say_when_they_came_after_a_restart() -> None:
    """``lockgw audit show`` and the resident's page: a relock in words, and whether it
    undid an opening from before a restart."""
    people = People()

    def said(code: str, body: EventBody) -> str:
        return describe(language(code), journal(body)[0], people)

    def relocked(why: str, kind: str = "door.relocked") -> RelockEvent:
        return RelockEvent(type=kind, door="front", device="front-lock", why=why, attempt="a")  # type: ignore[arg-type]

    assert said("en", relocked("not_opened")) == "The front door was locked again: nobody went in"
    assert said("en", relocked("not_opened_before_restart")) == (
        "The front door was locked again: nobody went in (after the gateway restarted)"
    )
    assert said("nl", relocked("late_answer_before_restart")) == (
        "De voordeur is weer op slot gedaan: het slot ging te laat open "
        "(na een herstart van de gateway)"
    )
    assert said("en", relocked("not_opened_before_restart", "door.left_unlocked")) == (
        "The front door could not be locked again: check it (after the gateway restarted)"
    )
    late = LateAnswerEvent(door="front", device="front-lock", action="unlock", attempt="a")
    assert "after the gateway had given up on it" in said("en", late)


async def _gave_up(
    lock: _Lock, lock_before: LockState | None, *, granted_meanwhile: bool = False
) -> list[EventBody]:
    """The door gave up on an unlock of ``lock`` (``lock_before``: its state when the
    command went out; ``granted_meanwhile``: another attempt's unlock was confirmed after
    it went out): the events the relocker journaled."""
    relocker, out, work = _relocker(lock, 30.0)
    sent_at = time.monotonic()
    if granted_meanwhile:
        other = Opening(
            attempt="a0", door="front", device="front-lock", action="unlock",
            at=time.monotonic(), sub="bram",
        )  # fmt: skip
        relocker.granted(other)
    opening = Opening(
        attempt="a1", door="front", device="front-lock", action="unlock",
        at=time.monotonic(), sub="anna",
    )  # fmt: skip
    relocker.gave_up(opening, lock_before, sent_at)
    async with asyncio.timeout(30):  # a hung relocker fails, nothing is timed
        await asyncio.gather(*work)
    relocker.close()
    return out


async def test_an_unlock_whose_state_beat_its_late_answer_is_attributed_and_locked_again() -> None:
    """The lock unlocked on the command and said so, but its answer missed the door's
    deadline: when the door gives up the lock is already open. Locked before the command,
    so this opening is the attempt's own — the phone heard "no" — and is undone (it was
    left open for good: a lock already open was never watched)."""
    lock = _Lock(LockState.UNLOCKED)
    out = await _gave_up(lock, LockState.LOCKED)
    assert [(b.type, getattr(b, "why", None)) for b in out] == [
        ("device.late_answer", None), ("door.relocked", "late_answer"),
    ]  # fmt: skip
    assert lock.state.lock is LockState.LOCKED


async def test_a_lock_open_before_the_attempt_is_left_as_it_was_when_the_door_gives_up() -> None:
    lock = _Lock(LockState.UNLOCKED)
    assert await _gave_up(lock, LockState.UNLOCKED) == []
    assert await _gave_up(lock, None) == []  # not known: not the attempt's to undo
    assert lock.state.lock is LockState.UNLOCKED


async def test_a_lock_another_carers_granted_unlock_opened_is_not_locked_on_them() -> None:
    """Two phones at one lock: Bram's unlock is confirmed while Anna's waits behind it and
    misses the door's deadline. The lock was locked when Anna's command went out and is
    open now — by Bram's grant, not hers: it stays open for him."""
    lock = _Lock(LockState.UNLOCKED)
    assert await _gave_up(lock, LockState.LOCKED, granted_meanwhile=True) == []
    assert lock.state.lock is LockState.UNLOCKED


async def _watching(lock: _Lock) -> tuple[Relocker, list[EventBody], list[asyncio.Task[None]]]:
    """A relocker watching ``lock`` (locked) for the late answer of Anna's attempt the
    door gave up on."""
    relocker, out, work = _relocker(lock, 30.0)
    await relocker.on_state("front-lock", lock.state)
    anna = Opening(
        attempt="a1", door="front", device="front-lock", action="unlock",
        at=time.monotonic(), sub="anna",
    )  # fmt: skip
    relocker.gave_up(anna, LockState.LOCKED, time.monotonic())
    assert relocker._late
    return relocker, out, work


async def test_a_granted_unlock_reported_before_its_answer_is_not_an_earlier_late_answer() -> None:
    """Anna's attempt was given up on; within the minute Bram's unlock goes out and the
    lock reports "unlocked" before the command's answer is in. That is Bram's unlock —
    granted, the door is his — not Anna's late answer: nothing is locked on him (it was,
    seen once in CI: the notice came first and the relock followed)."""
    lock = _Lock(LockState.LOCKED)
    relocker, out, work = await _watching(lock)
    bram = Opening(
        attempt="b1", door="front", device="front-lock", action="unlock",
        at=time.monotonic(), sub="bram",
    )  # fmt: skip
    with relocker.sending("front-lock"):
        lock.state = lock.state.model_copy(update={"lock": LockState.UNLOCKED})
        await relocker.on_state("front-lock", lock.state)
        relocker.granted(bram)
    await asyncio.gather(*work)
    relocker.close()
    assert out == [] and lock.state.lock is LockState.UNLOCKED


async def test_an_unlock_the_command_under_way_does_not_explain_is_the_late_answer() -> None:
    """The same, but Bram's command fails otherwise (not granted, not given up on): the
    unlock seen meanwhile is Anna's late answer after all, attributed and relocked once
    the command is over."""
    lock = _Lock(LockState.LOCKED)
    relocker, out, work = await _watching(lock)
    with relocker.sending("front-lock"):
        lock.state = lock.state.model_copy(update={"lock": LockState.UNLOCKED})
        await relocker.on_state("front-lock", lock.state)
        assert not work  # nothing decided while the command is under way
    async with asyncio.timeout(30):
        while not work:  # noqa: ASYNC110 - the relocker spawns its work
            await asyncio.sleep(0.01)
        await asyncio.gather(*work)
    relocker.close()
    assert [(b.type, getattr(b, "attempt", None)) for b in out] == [
        ("device.late_answer", "a1"), ("door.relocked", "a1"),
    ]  # fmt: skip
    assert lock.state.lock is LockState.LOCKED
