"""Which openings the journal says were still waiting for their relock when the gateway
stopped (``gateway.relock.unfinished``): the rules, one journal at a time. The whole
path with real processes (a kill, a clean stop, a used door, a thumb-turn, a jam) is in
tests/test_door_relock.py."""

from __future__ import annotations

from typing import Any

from gateway.relock import unfinished
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
