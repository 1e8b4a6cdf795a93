"""One entry → one visit, with what went wrong."""

from __future__ import annotations

from typing import Any

from gateway.visits import VisitLimits, VisitTracker
from protocols.device import CompartmentState, DeviceKind, DeviceState, KeyState
from protocols.events import DoorState, Envelope, LockState, VisitEvent


class Sink:
    def __init__(self) -> None:
        self.bodies: list[Any] = []

    async def emit(self, body: Any) -> Envelope:
        self.bodies.append(body)
        return Envelope(id=f"e{len(self.bodies)}", seq=len(self.bodies), ts="t", site="s", body=body)


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def lock(lock_state: LockState, door: DoorState) -> DeviceState:
    return DeviceState(kind=DeviceKind.LOCK, lock=lock_state, door=door)


def safe(comp: CompartmentState, key: KeyState) -> DeviceState:
    return DeviceState(kind=DeviceKind.KEYSAFE, compartment=comp, key=key)


def tracker(limits: VisitLimits | None = None) -> tuple[VisitTracker, Sink, Clock]:
    sink, clock = Sink(), Clock()
    return VisitTracker(sink, limits=lambda _d: limits or VisitLimits(), clock=clock), sink, clock


async def start(t: VisitTracker, kind: DeviceKind = DeviceKind.LOCK) -> None:
    await t.start(
        visit_id="g1", door="front", device="front-lock" if kind is DeviceKind.LOCK else "safe",
        kind=kind, iss="org", sub="c1", role="verzorgende", purpose="planned",
    )


def ended(sink: Sink) -> VisitEvent:
    (end,) = [b for b in sink.bodies if b.type == "visit.ended"]
    assert isinstance(end, VisitEvent)
    return end


async def test_a_normal_visit_at_a_lock_is_opened_closed_relocked() -> None:
    t, sink, clock = tracker()
    await start(t)
    clock.t += 5
    await t.on_state("front-lock", lock(LockState.UNLOCKED, DoorState.OPEN))
    clock.t += 1200
    await t.on_state("front-lock", lock(LockState.UNLOCKED, DoorState.CLOSED))
    clock.t += 3
    await t.on_state("front-lock", lock(LockState.LOCKED, DoorState.CLOSED))
    end = ended(sink)
    assert end.relocked is True and end.problems == [] and end.duration_s == 1208
    assert end.door_opened and end.door_closed and end.visit == "g1"
    assert t.active == 0


async def test_a_door_left_unlocked_ends_the_visit_with_a_problem() -> None:
    t, sink, clock = tracker(VisitLimits(relock_after=60))
    await start(t)
    await t.on_state("front-lock", lock(LockState.UNLOCKED, DoorState.OPEN))
    await t.on_state("front-lock", lock(LockState.UNLOCKED, DoorState.CLOSED))
    clock.t += 61
    await t.tick()
    end = ended(sink)
    assert end.relocked is False and end.problems == ["left_unlocked"]


async def test_nobody_entering_is_reported() -> None:
    t, sink, clock = tracker(VisitLimits(no_entry_after=120))
    await start(t)
    clock.t += 121
    await t.tick()
    assert ended(sink).problems == ["door_not_opened"]


async def test_a_door_left_open_is_noted_then_the_visit_ends_when_relocked() -> None:
    t, sink, clock = tracker(VisitLimits(door_left_open_after=300))
    await start(t)
    await t.on_state("front-lock", lock(LockState.UNLOCKED, DoorState.OPEN))
    clock.t += 301
    await t.tick()
    assert not [b for b in sink.bodies if b.type == "visit.ended"]
    await t.on_state("front-lock", lock(LockState.UNLOCKED, DoorState.CLOSED))
    await t.on_state("front-lock", lock(LockState.LOCKED, DoorState.CLOSED))
    assert ended(sink).problems == ["door_left_open"]


async def test_a_key_taken_and_returned() -> None:
    t, sink, clock = tracker()
    await start(t, DeviceKind.KEYSAFE)
    await t.on_state("safe", safe(CompartmentState.OPEN, KeyState.PRESENT))
    await t.on_state("safe", safe(CompartmentState.OPEN, KeyState.ABSENT))
    await t.on_state("safe", safe(CompartmentState.CLOSED, KeyState.ABSENT))
    assert t.active == 1
    clock.t += 900
    await t.on_state("safe", safe(CompartmentState.OPEN, KeyState.PRESENT))
    await t.on_state("safe", safe(CompartmentState.CLOSED, KeyState.PRESENT))
    end = ended(sink)
    assert end.key_returned is True and end.problems == [] and end.relocked is None


async def test_a_key_not_returned_ends_the_visit_with_a_problem() -> None:
    t, sink, clock = tracker(VisitLimits(key_not_returned_after=600))
    await start(t, DeviceKind.KEYSAFE)
    await t.on_state("safe", safe(CompartmentState.OPEN, KeyState.ABSENT))
    await t.on_state("safe", safe(CompartmentState.CLOSED, KeyState.ABSENT))
    clock.t += 601
    await t.tick()
    end = ended(sink)
    assert end.key_returned is False and end.problems == ["key_not_returned"]


async def test_a_new_entry_supersedes_an_open_visit_and_stopping_ends_the_rest() -> None:
    t, sink, _clock = tracker()
    await start(t)
    await start(t)
    await t.close()
    ends = [b for b in sink.bodies if b.type == "visit.ended"]
    assert [e.problems for e in ends] == [["superseded"], ["gateway_stopped"]]


async def test_other_devices_do_not_touch_a_visit() -> None:
    t, sink, _clock = tracker()
    await start(t)
    await t.on_state("back-lock", lock(LockState.LOCKED, DoorState.CLOSED))
    assert t.active == 1 and len(sink.bodies) == 1
