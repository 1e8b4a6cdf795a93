"""The carelock device model alone, with the clock passed in."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocols.carelock import (
    CONFIRM_TIMEOUT,
    CentralPairing,
    CommandBody,
    Kind,
    NotConfirmed,
    Opcode,
    PairDone,
    PairDoneReason,
    Pairing,
    PeripheralSession,
    Result,
    SessionOpen,
    decode_frame,
)
from protocols.carelock.frames import PairNonce, PairRequest, Refused, Status
from protocols.device import CompartmentState, KeyState, LockState
from simulators.carelock_device import ACTION_COST, PAIRING_WINDOW, UNLATCH_HOLD, CarelockDevice


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


def _reveal(
    d: CarelockDevice, central: CentralPairing, now: float = 0.0, link: object = None
) -> Pairing | None:
    """Pairing with the device model up to its reveal: the central's pairing (its code
    now on the device's display), or None when the device refused."""
    req = decode_frame(central.request())
    assert isinstance(req, PairRequest)
    frame, pending = d.pair(req, now)
    if pending is None:
        central.committed(frame)  # raises Refused
        return None
    nonce = decode_frame(central.committed(frame))
    assert isinstance(nonce, PairNonce)
    reveal, pairing = d.reveal(pending, nonce, now, link)
    if pairing is None:
        central.finish(reveal)  # raises Refused
        return None
    assert central.finish(reveal) == pairing
    return pairing


def _heard(d: CarelockDevice) -> list[tuple[object, bytes]]:
    """The PAIR_DONE frames the device sends, with the link each goes to."""
    frames: list[tuple[object, bytes]] = []
    d.on_pair_done = lambda link, frame, _code: frames.append((link, frame))
    return frames


def _pair(d: CarelockDevice, central: CentralPairing, now: float = 0.0) -> Pairing | None:
    """The whole pairing, the person at the device pressing confirm: (what it kept, or None)."""
    done = _heard(d)
    pairing = _reveal(d, central, now)
    if pairing is None:
        return None
    assert d.pending_code == pairing.code
    d.press("confirm", now)
    central.done(done[-1][1])
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




# -- confirmed on the device ---------------------------------------------------------------------
def _session_open(d: CarelockDevice, pairing: Pairing) -> bytes:
    """What the device answers a SESSION_OPEN with this pairing's key id."""
    frame = SessionOpen(pairing.key_id, bytes(16))
    return PeripheralSession().accept(frame, d.key_for(pairing.key_id), d.status())


def test_a_revealed_pairing_is_pending_and_unusable_until_confirmed_on_the_device(
    tmp_path: Path,
) -> None:
    state = tmp_path / "lock.json"
    d = CarelockDevice(Kind.LOCK, state_file=state, pairing=True, now=0.0)
    done = _heard(d)
    central, link = CentralPairing(), object()
    pairing = _reveal(d, central, 1.0, link)
    assert pairing is not None and d.pending_code == pairing.code
    # not usable, not saved, nothing said yet; pairing mode still on
    assert d.key_for(pairing.key_id) is None and d.pairing_ids() == []
    assert _session_open(d, pairing) == bytes([0x04, Status.UNKNOWN_KEY])
    assert CarelockDevice(Kind.LOCK, state_file=state).pairing_ids() == []
    assert done == [] and d.pairing_mode
    assert d.press("confirm", 2.0) == f"pairing with code {pairing.code} confirmed and stored"
    assert done == [(link, PairDone.stored().encode())]
    central.done(done[0][1])
    assert d.key_for(pairing.key_id) == pairing.pair_key and d.pending_code is None
    assert _session_open(d, pairing)[:2] == bytes([0x04, Status.OK])
    assert not d.pairing_mode  # a confirmed pairing ends pairing mode
    assert CarelockDevice(Kind.LOCK, state_file=state).pairing_ids() == [pairing.key_id]


def test_rejected_on_the_device_nothing_is_kept_and_the_window_stays_open() -> None:
    d = CarelockDevice(Kind.LOCK, pairing=True, now=0.0)
    done = _heard(d)
    rogue = CentralPairing()
    stranger = _reveal(d, rogue, 5.0)
    assert stranger is not None
    d.press("reject", 6.0)
    with pytest.raises(NotConfirmed) as err:
        rogue.done(done[-1][1])
    assert err.value.outcome is PairDoneReason.REJECTED
    assert d.key_for(stranger.key_id) is None and d.pending_code is None
    assert d.pairing_mode  # the installer tries again with the gateway
    mine = _pair(d, CentralPairing(), 7.0)
    assert mine is not None and d.pairing_ids() == [mine.key_id]


def test_nobody_confirms_in_time_the_pairing_is_refused() -> None:
    d = CarelockDevice(Kind.LOCK, pairing=True, now=0.0)
    done = _heard(d)
    central = CentralPairing()
    pairing = _reveal(d, central, 10.0)
    assert pairing is not None
    d.tick(10.0 + CONFIRM_TIMEOUT - 1)
    assert d.pending_code == pairing.code and done == []
    d.tick(10.0 + CONFIRM_TIMEOUT)
    with pytest.raises(NotConfirmed) as err:
        central.done(done[-1][1])
    assert err.value.outcome is PairDoneReason.TIMED_OUT
    assert d.pairing_ids() == [] and d.pending_code is None and d.pairing_mode
    with pytest.raises(ValueError, match="no pairing code is shown"):
        d.press("confirm", 10.0 + CONFIRM_TIMEOUT)  # too late


def test_the_window_closing_ends_a_pending_pairing_and_is_never_extended_by_it() -> None:
    d = CarelockDevice(Kind.LOCK, pairing=True, now=0.0)
    done = _heard(d)
    central = CentralPairing()
    assert _reveal(d, central, PAIRING_WINDOW - 5) is not None
    d.tick(PAIRING_WINDOW)
    with pytest.raises(NotConfirmed) as err:
        central.done(done[-1][1])
    assert err.value.outcome is PairDoneReason.WINDOW_CLOSED
    assert not d.pairing_mode and d.pairing_ids() == []
    # switched off by hand: the same
    d.switch("pairing", "on", 400.0)
    central = CentralPairing()
    assert _reveal(d, central, 401.0) is not None
    d.switch("pairing", "off", 402.0)
    with pytest.raises(NotConfirmed):
        central.done(done[-1][1])
    assert d.pairing_ids() == []


def test_one_pairing_pending_at_a_time() -> None:
    d = CarelockDevice(Kind.LOCK, pairing=True, now=0.0)
    _heard(d)
    early = CentralPairing()
    req = decode_frame(early.request())
    assert isinstance(req, PairRequest)
    committed, early_pending = d.pair(req, 1.0)  # committed to, not yet revealed
    assert early_pending is not None
    assert _reveal(d, CentralPairing(), 2.0) is not None  # the first to reveal waits
    with pytest.raises(Refused) as err:
        _reveal(d, CentralPairing(), 3.0)  # a request meanwhile
    assert err.value.status is Status.PAIRING_REFUSED
    nonce = decode_frame(early.committed(committed))
    assert isinstance(nonce, PairNonce)
    reveal, pairing = d.reveal(early_pending, nonce, 4.0)  # a reveal meanwhile
    assert pairing is None and reveal == bytes([0x06, Status.PAIRING_REFUSED])
    d.press("reject", 5.0)
    assert _pair(d, CentralPairing(), 6.0) is not None


def test_a_pending_pairing_ends_with_its_link_and_the_button_needs_a_code() -> None:
    d = CarelockDevice(Kind.LOCK, pairing=True, now=0.0)
    done = _heard(d)
    with pytest.raises(ValueError, match="no pairing code is shown"):
        d.press("confirm", 0.0)
    link = object()
    assert _reveal(d, CentralPairing(), 1.0, link) is not None
    with pytest.raises(ValueError, match="confirm or reject"):
        d.press("maybe", 1.0)
    d.link_lost(object())  # another central's link: no matter
    assert d.pending_code is not None
    d.link_lost(link)
    assert d.pending_code is None and done == [] and d.pairing_ids() == [] and d.pairing_mode
