"""The carelock profile alone: frames, pairing, sessions; tampering, replay, truncation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.carelock import (
    AuthenticationFailed,
    CentralPairing,
    CentralSession,
    EventBody,
    Kind,
    Opcode,
    PairRequest,
    PeripheralSession,
    Refused,
    Replayed,
    ResponseBody,
    Result,
    Sealed,
    SessionOpen,
    Status,
    StatusBlock,
    decode_frame,
    pair_device,
)
from protocols.carelock.frames import CommandBody
from protocols.carelock.gatt import MAX_FRAME, decode_battery, decode_profile, encode_profile
from protocols.device import CompartmentState, DoorState, KeyState, LockState
from protocols.errors import FrameError

LOCKED = StatusBlock(Kind.LOCK, lock=LockState.LOCKED, door=DoorState.CLOSED, auto_relock=True)
SAFE = StatusBlock(Kind.KEYSAFE, compartment=CompartmentState.CLOSED, key=KeyState.PRESENT)


def _paired() -> tuple[CentralSession, PeripheralSession]:
    central = CentralPairing()
    req = decode_frame(central.request())
    assert isinstance(req, PairRequest)
    response, device_side = pair_device(req)
    mine = central.finish(response)
    assert mine == device_side  # same key, same key id, same code for the installer
    session = CentralSession(mine.pair_key, mine.key_id)
    periph = PeripheralSession()
    opened = decode_frame(session.open_frame())
    assert isinstance(opened, SessionOpen)
    assert session.accept(periph.accept(opened, device_side.pair_key, LOCKED)) == LOCKED
    return session, periph


def _command(periph: PeripheralSession, data: bytes) -> tuple[int, CommandBody]:
    frame = decode_frame(data)
    assert isinstance(frame, Sealed)
    return periph.open_command(frame)


@pytest.mark.parametrize(
    "block",
    [
        LOCKED,
        SAFE,
        StatusBlock(Kind.LOCK, lock=LockState.JAMMED, door=DoorState.OPEN, battery_critical=True),
    ],
)
def test_status_block_round_trips(block: StatusBlock) -> None:
    assert StatusBlock.decode(block.encode()) == block


def test_unlock_is_one_write_and_one_notification() -> None:
    session, periph = _paired()
    counter, frame = session.command(Opcode.UNLOCK)
    assert len(frame) <= MAX_FRAME
    got_counter, body = _command(periph, frame)
    assert (got_counter, body) == (counter, CommandBody(Opcode.UNLOCK))
    unlocked = StatusBlock(Kind.LOCK, lock=LockState.UNLOCKED, door=DoorState.CLOSED)
    answer = session.receive(periph.response(counter, Result.OK, unlocked))
    assert answer == ResponseBody(counter, Result.OK, unlocked)
    assert session.receive(periph.event(LOCKED)) == EventBody(LOCKED)


def test_replayed_command_is_refused_by_the_device() -> None:
    session, periph = _paired()
    _, frame = session.command(Opcode.UNLOCK)
    _command(periph, frame)
    with pytest.raises(Replayed):
        _command(periph, frame)


def test_replayed_response_is_refused_by_the_central() -> None:
    session, periph = _paired()
    counter, _ = session.command(Opcode.STATUS)
    reply = periph.response(counter, Result.OK, LOCKED)
    session.receive(reply)
    with pytest.raises(Replayed):
        session.receive(reply)


def test_command_from_an_earlier_session_does_not_verify() -> None:
    central = CentralPairing()
    req = decode_frame(central.request())
    assert isinstance(req, PairRequest)
    response, dev = pair_device(req)
    mine = central.finish(response)
    first = CentralSession(mine.pair_key, mine.key_id)
    periph = PeripheralSession()
    opened = decode_frame(first.open_frame())
    assert isinstance(opened, SessionOpen)
    first.accept(periph.accept(opened, dev.pair_key, LOCKED))
    _, recorded = first.command(Opcode.UNLOCK)
    # a new connection: same central nonce replayed by an attacker, a fresh device nonce
    periph2 = PeripheralSession()
    periph2.accept(opened, dev.pair_key, LOCKED)
    with pytest.raises(AuthenticationFailed):
        _command(periph2, recorded)


@pytest.mark.parametrize("where", [0, 1, 4, 5, 10, 23])
def test_tampered_command_is_refused(where: int) -> None:
    session, periph = _paired()
    _, frame = session.command(Opcode.UNLOCK)
    bad = bytearray(frame)
    bad[where] ^= 0x01
    with pytest.raises(FrameError):
        _command(periph, bytes(bad))
    # the genuine frame still works afterwards: a forgery does not advance the counter
    assert _command(periph, frame)[1].op is Opcode.UNLOCK


def test_every_tampered_byte_of_a_response_or_event_is_refused_by_the_central() -> None:
    session, periph = _paired()
    counter, _ = session.command(Opcode.STATUS)
    for genuine in (periph.response(counter, Result.OK, LOCKED), periph.event(LOCKED)):
        for i in range(len(genuine)):
            for bit in (0x01, 0x80):
                bad = bytearray(genuine)
                bad[i] ^= bit
                with pytest.raises(FrameError):
                    session.receive(bytes(bad))
        session.receive(genuine)  # forgeries did not advance the counter


def test_truncated_frames_are_refused_on_both_sides() -> None:
    session, periph = _paired()
    _, cmd = session.command(Opcode.UNLOCK)
    for n in range(len(cmd)):
        with pytest.raises(FrameError):
            _command(periph, cmd[:n])
    counter, _ = session.command(Opcode.STATUS)
    reply = periph.response(counter, Result.OK, LOCKED)
    for n in range(len(reply)):
        with pytest.raises(FrameError):
            session.receive(reply[:n])


def test_unknown_key_is_refused_at_session_open() -> None:
    session = CentralSession(b"\x01" * 32, b"\x02" * 8)
    opened = decode_frame(session.open_frame())
    assert isinstance(opened, SessionOpen)
    with pytest.raises(Refused) as err:
        session.accept(PeripheralSession().accept(opened, None, LOCKED))
    assert err.value.status is Status.UNKNOWN_KEY


def test_device_impersonator_without_the_key_fails_session_open() -> None:
    central = CentralPairing()
    req = decode_frame(central.request())
    assert isinstance(req, PairRequest)
    mine = central.finish(pair_device(req)[0])
    session = CentralSession(mine.pair_key, mine.key_id)
    opened = decode_frame(session.open_frame())
    assert isinstance(opened, SessionOpen)
    with pytest.raises(AuthenticationFailed):
        session.accept(PeripheralSession().accept(opened, b"\x07" * 32, LOCKED))


def test_command_before_session_open_is_refused() -> None:
    with pytest.raises(Refused) as err:
        PeripheralSession().open_command(_fake_command())
    assert err.value.status is Status.NO_SESSION


def _fake_command() -> Sealed:
    frame = decode_frame(bytes([0x10]) + b"\x00\x00\x00\x01" + b"\x00" * 19)
    assert isinstance(frame, Sealed)
    return frame


def test_pairing_refusal_and_forged_confirmation() -> None:
    central = CentralPairing()
    with pytest.raises(Refused) as err:
        central.finish(bytes([0x02, Status.NOT_IN_PAIRING_MODE]))
    assert err.value.status is Status.NOT_IN_PAIRING_MODE
    req = decode_frame(central.request())
    assert isinstance(req, PairRequest)
    good = bytearray(pair_device(req)[0])
    good[-1] ^= 1
    with pytest.raises(AuthenticationFailed):
        central.finish(bytes(good))


def test_profile_and_battery_codecs() -> None:
    assert decode_profile(encode_profile(Kind.KEYSAFE)) is Kind.KEYSAFE
    assert decode_battery(b"\x64") == 100
    for bad in (b"", b"\x65", b"\x01\x02"):
        with pytest.raises(FrameError):
            decode_battery(bad)
    for bad in (b"\x02\x01", b"\x01\x09", b"\x01"):
        with pytest.raises(FrameError):
            decode_profile(bad)


@given(st.binary(max_size=80))
def test_frame_decoder_never_raises_anything_but_frame_error(data: bytes) -> None:
    try:
        frame = decode_frame(data)
    except FrameError:
        return
    assert frame.encode() == data


@given(st.binary(min_size=4, max_size=4))
def test_status_block_decoder_is_strict(data: bytes) -> None:
    try:
        block = StatusBlock.decode(data)
    except FrameError:
        return
    assert block.encode() == data


@given(st.binary(max_size=40))
def test_central_receive_refuses_garbage(data: bytes) -> None:
    session, _ = _paired()
    with pytest.raises(FrameError):
        session.receive(data)


@given(st.binary(max_size=40))
def test_device_refuses_garbage_commands(data: bytes) -> None:
    _, periph = _paired()
    with pytest.raises(FrameError):
        frame = decode_frame(data)
        if not isinstance(frame, Sealed):
            raise FrameError("not a command")
        periph.open_command(frame)
