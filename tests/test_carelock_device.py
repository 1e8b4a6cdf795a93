"""The carelock device model alone, with the clock passed in."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocols.carelock import (
    CentralPairing,
    CommandBody,
    Kind,
    Opcode,
    Pairing,
    Result,
    decode_frame,
)
from protocols.carelock.frames import PairNonce, PairRequest, Refused, Status
from protocols.device import CompartmentState, KeyState, LockState
from simulators.carelock_device import ACTION_COST, UNLATCH_HOLD, CarelockDevice


def _do(device: CarelockDevice, op: Opcode, now: float = 0.0, arg: int = 0) -> Result:
    return device.command(CommandBody(op, arg), now)


def test_lock_unlock_unlatch_springs_back() -> None:
    d = CarelockDevice(Kind.LOCK)
    assert _do(d, Opcode.UNLOCK) is Result.OK and d.status().lock is LockState.UNLOCKED
    assert _do(d, Opcode.LOCK) is Result.OK and d.status().lock is LockState.LOCKED
    assert _do(d, Opcode.UNLATCH, 10.0) is Result.OK and d.status().lock is LockState.UNLATCHED
    d.tick(10.0 + UNLATCH_HOLD)
    assert d.status().lock is LockState.UNLOCKED


def test_auto_relock_waits_for_the_door_to_close() -> None:
    d = CarelockDevice(Kind.LOCK)
    d.switch("auto-relock", "30", 0.0)
    _do(d, Opcode.UNLOCK, 0.0)
    d.switch("door", "open", 5.0)
    d.tick(40.0)
    assert d.status().lock is LockState.UNLOCKED  # door open: no relock
    d.switch("door", "close", 50.0)
    d.tick(79.0)
    assert d.status().lock is LockState.UNLOCKED
    d.tick(80.0)
    assert d.status().lock is LockState.LOCKED


def test_jam_and_door_open_refuse_the_bolt() -> None:
    d = CarelockDevice(Kind.LOCK)
    d.switch("door", "open", 0)
    assert _do(d, Opcode.LOCK) is Result.DOOR_OPEN
    d.switch("door", "close", 0)
    d.switch("jam", "on", 0)
    assert _do(d, Opcode.UNLOCK) is Result.JAMMED and d.status().lock is LockState.JAMMED
    d.switch("jam", "off", 0)
    assert _do(d, Opcode.UNLOCK) is Result.OK and d.status().lock is LockState.UNLOCKED


def test_battery_drain_and_empty_battery() -> None:
    d = CarelockDevice(Kind.LOCK)
    d.switch("battery", "12", 0)
    assert not d.status().battery_critical
    d.switch("drain", "on", 0)
    d.tick(3.0)
    assert d.battery == 9 and d.status().battery_critical
    d.tick(20.0)
    assert d.battery == 0
    assert _do(d, Opcode.UNLOCK, 20.0) is Result.BATTERY_EMPTY


def test_every_motor_action_costs_battery() -> None:
    d = CarelockDevice(Kind.KEYSAFE)
    _do(d, Opcode.OPEN)
    assert d._state.battery == pytest.approx(100 - ACTION_COST)


def test_key_safe_compartment_and_key() -> None:
    d = CarelockDevice(Kind.KEYSAFE)
    assert _do(d, Opcode.UNLOCK) is Result.NOT_SUPPORTED
    with pytest.raises(ValueError, match="compartment is closed"):
        d.switch("key", "take", 0)
    assert _do(d, Opcode.OPEN) is Result.OK
    d.switch("key", "take", 0)
    assert (d.status().compartment, d.status().key) == (CompartmentState.OPEN, KeyState.ABSENT)
    d.switch("key", "return", 0)
    d.switch("compartment", "close", 0)
    assert (d.status().compartment, d.status().key) == (CompartmentState.CLOSED, KeyState.PRESENT)


def _pair(d: CarelockDevice, central: CentralPairing, now: float = 0.0) -> Pairing | None:
    """The whole pairing with the device model: (what the device kept, or None)."""
    req = decode_frame(central.request())
    assert isinstance(req, PairRequest)
    frame, pending = d.pair(req, now)
    if pending is None:
        central.committed(frame)  # raises Refused
        return None
    nonce = decode_frame(central.committed(frame))
    assert isinstance(nonce, PairNonce)
    reveal, pairing = d.reveal(pending, nonce, now)
    assert pairing is not None and central.finish(reveal) == pairing
    return pairing


def test_pairing_only_in_pairing_mode_and_not_when_refused() -> None:
    d = CarelockDevice(Kind.LOCK)
    req = decode_frame(CentralPairing().request())
    assert isinstance(req, PairRequest)
    frame, pairing = d.pair(req, 0)
    assert pairing is None and frame == bytes([0x02, Status.NOT_IN_PAIRING_MODE])
    d.switch("pairing", "on", 0)
    d.switch("refuse-pairing", "on", 0)
    assert d.pair(req, 0)[1] is None
    d.switch("refuse-pairing", "off", 0)
    assert _pair(d, CentralPairing()) is not None
    assert not d.pairing_mode  # one pairing per pairing mode
    with pytest.raises(Refused):
        _pair(d, CentralPairing())


def test_a_pairing_committed_to_is_not_kept_once_the_window_has_closed() -> None:
    d = CarelockDevice(Kind.LOCK, pairing=True, now=0.0)
    central = CentralPairing()
    req = decode_frame(central.request())
    assert isinstance(req, PairRequest)
    frame, pending = d.pair(req, 10.0)
    assert pending is not None
    nonce = decode_frame(central.committed(frame))
    assert isinstance(nonce, PairNonce)
    reveal, pairing = d.reveal(pending, nonce, 400.0)
    assert pairing is None and reveal == bytes([0x06, Status.NOT_IN_PAIRING_MODE])


def test_pairing_mode_times_out() -> None:
    d = CarelockDevice(Kind.LOCK, pairing=True, now=0.0)
    d.tick(299.0)
    assert d.pairing_mode
    d.tick(301.0)
    assert not d.pairing_mode


def test_state_survives_a_restart(tmp_path: Path) -> None:
    f = tmp_path / "lock.json"
    d = CarelockDevice(Kind.LOCK, state_file=f, pairing=True)
    pairing = _pair(d, CentralPairing())
    assert pairing is not None
    _do(d, Opcode.UNLOCK)
    d.switch("door", "open", 0)
    d.switch("battery", "42", 0)
    assert f.stat().st_mode & 0o777 == 0o600
    again = CarelockDevice(Kind.LOCK, state_file=f)
    assert again.status() == d.status() and again.battery == 42
    assert again.info.serial == d.info.serial
    assert again.key_for(pairing.key_id) == pairing.pair_key
    with pytest.raises(ValueError, match="not a keysafe"):
        CarelockDevice(Kind.KEYSAFE, state_file=f)


def test_listeners_hear_changes_only() -> None:
    d = CarelockDevice(Kind.LOCK)
    heard: list[int] = []
    d.listeners.append(lambda: heard.append(1))
    _do(d, Opcode.STATUS)
    d.switch("tamper", "on", 0)
    assert heard == []
    _do(d, Opcode.UNLOCK)
    d.switch("door", "open", 0)
    assert len(heard) == 2


@pytest.mark.parametrize(
    ("name", "value"),
    [("nope", "1"), ("jam", "maybe"), ("battery", "101"), ("key", "take"), ("door", "ajar")],
)
def test_bad_switches_say_what_is_wrong(name: str, value: str) -> None:
    d = CarelockDevice(Kind.LOCK)
    with pytest.raises(ValueError):
        d.switch(name, value, 0)


