"""The carelock profile alone: frames, pairing, sessions; tampering, replay, truncation."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from protocols.carelock import (
    AuthenticationFailed,
    CentralPairing,
    CentralSession,
    DevicePairing,
    EventBody,
    Kind,
    NotConfirmed,
    Opcode,
    PairDone,
    PairDoneReason,
    Pairing,
    PairingEntry,
    PairNonce,
    PairRequest,
    PeripheralSession,
    Refused,
    RemovePairingBody,
    Replayed,
    ResponseBody,
    Result,
    Sealed,
    SessionOpen,
    Status,
    StatusBlock,
    decode_frame,
)
from protocols.carelock.frames import CommandBody
from protocols.carelock.gatt import MAX_FRAME, decode_battery, decode_profile, encode_profile
from protocols.device import CompartmentState, DoorState, KeyState, LockState
from protocols.errors import FrameError

LOCKED = StatusBlock(Kind.LOCK, lock=LockState.LOCKED, door=DoorState.CLOSED, auto_relock=True)
SAFE = StatusBlock(Kind.KEYSAFE, compartment=CompartmentState.CLOSED, key=KeyState.PRESENT)


def pair(central: CentralPairing) -> tuple[Pairing, Pairing]:
    """One whole pairing: (what the central made, what the device made)."""
    req = decode_frame(central.request())
    assert isinstance(req, PairRequest)
    device = DevicePairing(req)
    nonce = decode_frame(central.committed(device.response()))
    assert isinstance(nonce, PairNonce)
    reveal, device_side = device.reveal(nonce)
    return central.finish(reveal), device_side


def _paired() -> tuple[CentralSession, PeripheralSession]:
    mine, device_side = pair(CentralPairing())
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
    mine, dev = pair(CentralPairing())
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
    mine, _ = pair(CentralPairing())
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
        central.committed(bytes([0x02, Status.NOT_IN_PAIRING_MODE]))
    assert err.value.status is Status.NOT_IN_PAIRING_MODE
    req = decode_frame(central.request())
    assert isinstance(req, PairRequest)
    device = DevicePairing(req)
    nonce = decode_frame(central.committed(device.response()))
    assert isinstance(nonce, PairNonce)
    good = bytearray(device.reveal(nonce)[0])
    good[-1] ^= 1  # the confirm
    with pytest.raises(AuthenticationFailed, match="confirmation"):
        central.finish(bytes(good))
    with pytest.raises(Refused):
        central.finish(bytes([0x06, Status.NOT_IN_PAIRING_MODE]))


# -- a man in the middle (issue 17, item 3) ---------------------------------------------------


class Mitm:
    """Sits between the installer's central and the device during the pairing window:
    plays the device towards the central and a central towards the device."""

    def __init__(self) -> None:
        self.as_central = CentralPairing()
        self.key = X25519PrivateKey.generate()  # its device side's key
        self.as_device: DevicePairing | None = None

    def intercept_request(self, request: bytes) -> bytes:
        """The central's request: answered by the MITM's own device side (with its own
        key and a commitment it must make now, before it sees the central's nonce)."""
        req = decode_frame(request)
        assert isinstance(req, PairRequest)
        self.as_device = DevicePairing(req, self.key)
        return self.as_device.response()


def test_a_man_in_the_middle_shows_different_codes() -> None:
    """Relaying honestly, the MITM ends with two pairings whose codes differ (it had to
    commit before seeing the other side's nonce): the installer sees the mismatch."""
    for _ in range(20):
        central, mitm = CentralPairing(), Mitm()
        towards_central = mitm.intercept_request(central.request())
        # the MITM pairs with the real device as a central
        real_req = decode_frame(mitm.as_central.request())
        assert isinstance(real_req, PairRequest)
        real_device = DevicePairing(real_req)
        nonce_for_device = decode_frame(mitm.as_central.committed(real_device.response()))
        assert isinstance(nonce_for_device, PairNonce)
        device_reveal, device_side = real_device.reveal(nonce_for_device)
        with_device = mitm.as_central.finish(device_reveal)
        # now the central: its nonce comes only after the MITM committed
        nonce = decode_frame(central.committed(towards_central))
        assert isinstance(nonce, PairNonce)
        assert mitm.as_device is not None
        reveal, _ = mitm.as_device.reveal(nonce)
        with_central = central.finish(reveal)
        assert with_device == device_side
        assert with_central.code != device_side.code


@given(st.binary(min_size=16, max_size=16))
def test_a_man_in_the_middle_cannot_choose_its_nonce_after_seeing_both_sides(
    chosen: bytes,
) -> None:
    """The search the old profile allowed: knowing the central's nonce and the device's
    code, try nonces until the codes match. Any nonce but the one committed to before the
    central's nonce was seen is refused by the central, whatever it makes the code."""
    central, mitm = CentralPairing(), Mitm()
    towards_central = mitm.intercept_request(central.request())
    nonce = decode_frame(central.committed(towards_central))
    assert isinstance(nonce, PairNonce)
    assert mitm.as_device is not None
    committed_reveal, _ = mitm.as_device.reveal(nonce)
    honest = decode_frame(committed_reveal)
    if chosen == honest.nonce:  # type: ignore[union-attr]
        return
    # a device side with the same key but a nonce chosen after the fact
    req = PairRequest(central.central_pub)
    forged = DevicePairing(req, mitm.key, nonce=chosen)
    reveal, _ = forged.reveal(nonce)
    with pytest.raises(AuthenticationFailed, match="commitment"):
        central.finish(reveal)


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


def test_pairings_are_listed_and_removed_over_a_sealed_session() -> None:
    session, periph = _paired()
    counter, frame = session.command(Opcode.LIST_PAIRINGS, 1)
    got, body = _command(periph, frame)
    assert got == counter and body == CommandBody(Opcode.LIST_PAIRINGS, 1)
    entry = PairingEntry(counter, 1, 2, b"\x11" * 8, this_session=False)
    assert session.receive(periph.pairing_entry(entry)) == entry
    counter, frame = session.remove_pairing(b"\x22" * 8)
    sealed = decode_frame(frame)
    assert isinstance(sealed, Sealed)
    assert periph.open_command(sealed) == (counter, RemovePairingBody(b"\x22" * 8))
    # a device does not send REMOVE_PAIRING, nor a central PAIRING
    with pytest.raises(FrameError):
        session.receive(frame)
    with pytest.raises(FrameError):
        PairingEntry.decode(b"\x00\x00\x00\x01\x02\x02" + b"\x00" * 9)  # index 2 of 2


# -- PAIR_DONE: the device says whether a person confirmed the code on it ----------------------
def test_pair_done_is_three_bytes_stored_or_refused_with_a_reason() -> None:
    assert PairDone.stored().encode() == bytes([0x07, Status.OK, PairDoneReason.STORED])
    assert decode_frame(b"\x07\x00\x00") == PairDone.stored()
    for reason in set(PairDoneReason) - {PairDoneReason.STORED}:
        frame = PairDone.refused(reason).encode()
        assert frame == bytes([0x07, Status.PAIRING_REFUSED, reason])
        assert decode_frame(frame) == PairDone(Status.PAIRING_REFUSED, reason)


@pytest.mark.parametrize(
    "data",
    [
        b"\x07",  # no status
        b"\x07\x00",  # truncated
        b"\x07\x03",  # a refusal is no shorter
        b"\x07\x00\x00\x00",  # padded
        b"\x07\x03\x01" + b"\x00" * 16,  # padded like a reveal
        b"\x07\x00\x01",  # stored, with a reason for not storing
        b"\x07\x03\x00",  # refused, "stored"
        b"\x07\x02\x03",  # only ok or pairing refused
        b"\x07\x04\x01",
        b"\x07\x03\x05",  # unknown reason
        b"\x07\x09\x01",  # unknown status
    ],
)
def test_malformed_pair_done_is_refused(data: bytes) -> None:
    with pytest.raises(FrameError):
        decode_frame(data)


def _revealed() -> tuple[CentralPairing, Pairing]:
    central = CentralPairing()
    req = decode_frame(central.request())
    assert isinstance(req, PairRequest)
    device = DevicePairing(req)
    nonce = decode_frame(central.committed(device.response()))
    assert isinstance(nonce, PairNonce)
    reveal, _ = device.reveal(nonce)
    return central, central.finish(reveal)


def test_the_central_hears_whether_the_device_stored_the_pairing() -> None:
    central, _ = _revealed()
    central.done(PairDone.stored().encode())
    for reason in (PairDoneReason.REJECTED, PairDoneReason.TIMED_OUT, PairDoneReason.FULL):
        central, _ = _revealed()
        with pytest.raises(NotConfirmed) as err:
            central.done(PairDone.refused(reason).encode())
        assert err.value.outcome is reason and err.value.status is Status.PAIRING_REFUSED
    central, _ = _revealed()
    with pytest.raises(Refused) as refused:
        central.done(bytes([0x7F, Status.MALFORMED]))
    assert refused.value.status is Status.MALFORMED
    with pytest.raises(FrameError, match="expected a pair done"):
        central.done(bytes([0x06, Status.PAIRING_REFUSED]))
    with pytest.raises(FrameError, match="3 bytes, not 2"):
        central.done(b"\x07\x00")  # truncated: never taken as "stored"


def test_a_pair_done_before_the_reveal_is_refused() -> None:
    central = CentralPairing()
    central.request()
    with pytest.raises(FrameError, match="no pair reveal yet"):
        central.done(PairDone.stored().encode())
