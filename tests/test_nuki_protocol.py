"""protocols/nuki and the simulated lock's state machine, without any transport.

Known-answer vectors are the examples of Nuki's published BLE API documentation.
"""

from __future__ import annotations

import contextlib
import struct
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.nuki import (
    PAIRING_GDIO,
    USDIO,
    AuthorizationAuthenticator,
    AuthorizationData,
    AuthorizationId,
    AuthorizationIdConfirmation,
    BatteryReport,
    Challenge,
    ClientType,
    Command,
    Config,
    DoorSensorState,
    ErrorCode,
    ErrorReport,
    KeyPair,
    KeyturnerStates,
    LockAction,
    LockActionRequest,
    LockState,
    NukiFrameError,
    NukiState,
    PublicKey,
    RequestConfig,
    RequestData,
    Status,
    StatusCode,
    battery_byte,
    battery_from_byte,
    crc16,
    decode_plain,
    encode_encrypted,
    encode_plain,
    open_envelope,
    parse_envelope,
    shared_key,
)
from protocols.nuki.frames import Message
from protocols.nuki.pairing import Paired, PairingClient
from simulators.nuki_lock import NukiLock, NukiSession

# Nuki's documented example keys (Smart Lock API, "Authorize App")
LOCK_PK = bytes.fromhex("2FE57DA347CD62431528DAAC5FBB290730FFF684AFC4CFC2ED90995F58CB3B74")
CL_PK = bytes.fromhex("F88127CCF48023B5CBE9101D24BAA8A368DA94E8C2E3CDE2DED29CE96AB50C15")
CL_SK = bytes.fromhex("8CAA54672307BFFDF5EA183FC607158D2011D008ECA6A1088614FF0853A5AA07")
SHARED = bytes.fromhex("217FCB0F18CAF284E9BDEA0B94B83B8D10867ED706BFDEDBD2381F4CB3B8F730")


def test_crc_and_plain_frame_match_nukis_request_public_key_example() -> None:
    assert encode_plain(
        Command.REQUEST_DATA, RequestData(Command.PUBLIC_KEY).encode()
    ) == bytes.fromhex("0100030027a7")
    assert crc16(b"123456789") == 0x29B1  # CRC-16/CCITT-FALSE check value


def test_shared_key_is_nacl_beforenm_of_nukis_example() -> None:
    assert KeyPair.from_secret(CL_SK).public == CL_PK
    assert shared_key(LOCK_PK, CL_SK) == SHARED


def test_encrypted_frame_matches_nukis_request_challenge_example() -> None:
    nonce = bytes.fromhex("88FDEFD7F941B63C242B7F84B3D786886340A4A8B1C1EAA0")
    frame = encode_encrypted(
        SHARED,
        struct.pack("<I", 2),
        Command.REQUEST_DATA,
        RequestData(Command.CHALLENGE).encode(),
        nonce=nonce,
    )
    assert frame == bytes.fromhex(
        "88FDEFD7F941B63C242B7F84B3D786886340A4A8B1C1EAA0020000001A00"
        "066819A2956E6A79AF6ED66D257B276715F51F63A8BEB9ED0D47"
    )
    msg = open_envelope(parse_envelope(frame), SHARED)
    assert msg == Message(Command.REQUEST_DATA, b"\x04\x00", struct.pack("<I", 2))


def test_bad_crc_is_refused_with_error_bad_crc() -> None:
    frame = bytearray(encode_plain(Command.REQUEST_DATA, b"\x03\x00"))
    frame[-1] ^= 0xFF
    with pytest.raises(NukiFrameError) as err:
        decode_plain(bytes(frame))
    assert err.value.code is ErrorCode.ERROR_BAD_CRC


def test_wrong_key_is_refused_with_not_authorized() -> None:
    frame = encode_encrypted(SHARED, b"\x01\x00\x00\x00", Command.REQUEST_DATA, b"\x0c\x00")
    with pytest.raises(NukiFrameError) as err:
        open_envelope(parse_envelope(frame), bytes(32))
    assert err.value.code is ErrorCode.K_ERROR_NOT_AUTHORIZED


def test_battery_byte_carries_percent_and_flags() -> None:
    assert battery_from_byte(battery_byte(84, critical=False)) == (84, False, False)
    assert battery_from_byte(battery_byte(10, critical=True, charging=True)) == (10, True, True)


# -- hypothesis: every decoder returns a value or raises NukiFrameError --------------------
DECODERS = [
    decode_plain,
    PublicKey.decode,
    Challenge.decode,
    AuthorizationAuthenticator.decode,
    RequestConfig.decode,
    parse_envelope,
    RequestData.decode,
    Status.decode,
    ErrorReport.decode,
    AuthorizationData.decode,
    AuthorizationId.decode,
    AuthorizationIdConfirmation.decode,
    LockActionRequest.decode,
    KeyturnerStates.decode,
    BatteryReport.decode,
    Config.decode,
]


@pytest.mark.parametrize("decoder", DECODERS, ids=lambda d: d.__qualname__)
@given(data=st.binary(max_size=600))
def test_decoders_never_raise_anything_but_nuki_frame_error(decoder: object, data: bytes) -> None:
    with contextlib.suppress(NukiFrameError):
        decoder(data)  # type: ignore[operator]


@given(key=st.binary(min_size=32, max_size=32), data=st.binary(min_size=0, max_size=300))
def test_open_envelope_never_raises_anything_but_nuki_frame_error(key: bytes, data: bytes) -> None:
    with contextlib.suppress(NukiFrameError):
        open_envelope(parse_envelope(data), key)


@given(
    command=st.integers(0, 0xFFFF),
    payload=st.binary(max_size=200),
    auth=st.binary(min_size=4, max_size=4),
    key=st.binary(min_size=32, max_size=32),
)
def test_frames_round_trip(command: int, payload: bytes, auth: bytes, key: bytes) -> None:
    assert decode_plain(encode_plain(command, payload)) == Message(command, payload)
    assert open_envelope(
        parse_envelope(encode_encrypted(key, auth, command, payload)), key
    ) == Message(command, payload, auth)


@given(
    lock=st.sampled_from(LockState),
    door=st.sampled_from(DoorSensorState),
    percent=st.integers(0, 100),
    critical=st.booleans(),
)
def test_keyturner_states_round_trip(
    lock: LockState, door: DoorSensorState, percent: int, critical: bool
) -> None:
    from protocols.nuki import ActionTrigger

    states = KeyturnerStates(
        NukiState.DOOR_MODE,
        lock,
        ActionTrigger.SYSTEM,
        datetime(2026, 11, 23, 22, 0, 5),
        60,
        battery_byte(percent, critical=critical),
        door_sensor_state=door,
    )
    back = KeyturnerStates.decode(states.encode() + b"\x00\x00")  # newer firmware appends fields
    assert back == states
    assert back.battery_percent == percent - percent % 2
    assert back.battery_critical is critical


@given(
    action=st.sampled_from(LockAction),
    app_id=st.integers(0, 2**32 - 1),
    suffix=st.none() | st.text(alphabet="abcdefgh", max_size=20),
)
def test_lock_action_round_trip(action: LockAction, app_id: int, suffix: str | None) -> None:
    req = LockActionRequest(action, app_id, bytes(range(32)), 0, suffix)
    assert LockActionRequest.decode(req.encode()) == req


def test_config_round_trip_gives_serial_and_firmware() -> None:
    cfg = Config(
        nuki_id=0x2A1B3C4D, name="Front door", firmware_version=(3, 9, 8), hardware_revision=(4, 1)
    )
    back = Config.decode(cfg.encode())
    assert (back.serial, back.firmware, back.name) == ("2A1B3C4D", "3.9.8", "Front door")


# -- the simulated lock, driven in memory by the pure pairing client --------------------------
def _deliver(session: NukiSession, char: str, frame: bytes) -> list[tuple[str, bytes]]:
    return [(o.char, o.data) for o in session.handle(char, frame)]


def pair(lock: NukiLock, name: str = "lockgw") -> Paired:
    session = lock.session()
    client = PairingClient(KeyPair.generate(), app_id=7, name=name, id_type=ClientType.BRIDGE)
    frame: bytes | None = client.start()
    while frame is not None:
        [(char, answer)] = _deliver(session, PAIRING_GDIO, frame)
        assert char == PAIRING_GDIO
        frame = client.receive(decode_plain(answer))
    assert client.result is not None
    return client.result


def request(
    session: NukiSession, p: Paired, command: int, payload: bytes, *, key: bytes | None = None
) -> list[Message]:
    frame = encode_encrypted(key or p.shared_key, p.auth_id, command, payload)
    out = []
    for char, data in _deliver(session, USDIO, frame):
        if char == USDIO:
            out.append(open_envelope(parse_envelope(data), p.shared_key))
        else:
            out.append(decode_plain(data))
    return out


def test_pairing_then_unlock_reports_accepted_states_and_complete() -> None:
    lock = NukiLock(pairing=True)
    p = pair(lock)
    assert lock.pairing_mode is False and p.auth_id in lock.authorizations
    s = lock.session()
    [challenge] = request(s, p, Command.REQUEST_DATA, RequestData(Command.CHALLENGE).encode())
    assert challenge.command == Command.CHALLENGE
    msgs = request(
        s,
        p,
        Command.LOCK_ACTION,
        LockActionRequest(LockAction.UNLOCK, 7, challenge.payload).encode(),
    )
    assert [m.command for m in msgs] == [
        Command.STATUS,
        Command.KEYTURNER_STATES,
        Command.KEYTURNER_STATES,
        Command.STATUS,
    ]
    assert Status.decode(msgs[0].payload).status is StatusCode.ACCEPTED
    assert KeyturnerStates.decode(msgs[2].payload).lock_state is LockState.UNLOCKED
    assert Status.decode(msgs[3].payload).status is StatusCode.COMPLETE


def _error(msgs: list[Message]) -> ErrorCode | None:
    [m] = msgs
    assert m.command == Command.ERROR_REPORT
    return ErrorReport.decode(m.payload).error


def test_pairing_refused_when_not_in_pairing_mode() -> None:
    with pytest.raises(NukiFrameError) as err:
        pair(NukiLock(pairing=False))
    assert err.value.code is ErrorCode.P_ERROR_NOT_PAIRING


def test_used_challenge_nonce_is_refused_with_bad_nonce() -> None:
    lock = NukiLock(pairing=True)
    p = pair(lock)
    s = lock.session()
    [challenge] = request(s, p, Command.REQUEST_DATA, RequestData(Command.CHALLENGE).encode())
    action = LockActionRequest(LockAction.UNLOCK, 7, challenge.payload).encode()
    request(s, p, Command.LOCK_ACTION, action)
    assert _error(request(s, p, Command.LOCK_ACTION, action)) is ErrorCode.K_ERROR_BAD_NONCE


def test_replayed_encrypted_frame_is_refused_with_bad_nonce() -> None:
    lock = NukiLock(pairing=True)
    p = pair(lock)
    s = lock.session()
    frame = encode_encrypted(
        p.shared_key,
        p.auth_id,
        Command.REQUEST_DATA,
        RequestData(Command.KEYTURNER_STATES).encode(),
    )
    [(_, first)] = _deliver(s, USDIO, frame)
    assert open_envelope(parse_envelope(first), p.shared_key).command == Command.KEYTURNER_STATES
    [(_, again)] = _deliver(s, USDIO, frame)
    msg = open_envelope(parse_envelope(again), p.shared_key)
    assert ErrorReport.decode(msg.payload).error is ErrorCode.K_ERROR_BAD_NONCE


def test_wrong_key_is_answered_unencrypted_with_not_authorized() -> None:
    lock = NukiLock(pairing=True)
    p = pair(lock)
    msgs = request(lock.session(), p, Command.REQUEST_DATA, b"\x0c\x00", key=bytes(32))
    assert _error(msgs) is ErrorCode.K_ERROR_NOT_AUTHORIZED


def test_jammed_motor_reports_motor_blocked() -> None:
    lock = NukiLock(pairing=True)
    p = pair(lock)
    lock.jammed = True
    s = lock.session()
    [challenge] = request(s, p, Command.REQUEST_DATA, RequestData(Command.CHALLENGE).encode())
    msgs = request(
        s,
        p,
        Command.LOCK_ACTION,
        LockActionRequest(LockAction.UNLOCK, 7, challenge.payload).encode(),
    )
    assert KeyturnerStates.decode(msgs[1].payload).lock_state is LockState.MOTOR_BLOCKED
    assert ErrorReport.decode(msgs[2].payload).error is ErrorCode.K_ERROR_MOTOR_BLOCKED


def test_lock_state_survives_restart_through_state_file(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "nuki.json"
    lock = NukiLock(pairing=True, state_file=path)
    p = pair(lock)
    again = NukiLock(state_file=path)
    assert again.keypair == lock.keypair and p.auth_id in again.authorizations
    assert (path.stat().st_mode & 0o777) == 0o600


@given(
    steps=st.lists(
        st.tuples(st.sampled_from([*Command, 0x0000, 0xFFFF]), st.binary(max_size=120)), max_size=6
    )
)
def test_pairing_client_answers_any_message_with_a_frame_or_a_nuki_error(
    steps: list[tuple[int, bytes]],
) -> None:
    client = PairingClient(KeyPair.generate(), app_id=1, name="x")
    client.start()
    for command, payload in steps:
        try:
            client.receive(Message(int(command), payload))
        except NukiFrameError:
            return


_paired_lock = NukiLock(pairing=True)
_paired = pair(_paired_lock)


@given(
    char=st.sampled_from([PAIRING_GDIO, USDIO, "a92ee201-5501-11e4-916c-0800200c9a66"]),
    data=st.binary(max_size=300),
    as_paired=st.booleans(),
    command=st.sampled_from(Command),
)
def test_the_lock_answers_any_write_without_crashing(
    char: str, data: bytes, as_paired: bool, command: Command
) -> None:
    session = _paired_lock.session()
    try:
        frame = (
            encode_encrypted(_paired.shared_key, _paired.auth_id, command, data[:200])
            if as_paired and char == USDIO
            else data
        )
        for out in session.handle(char, frame):
            assert out.char in (PAIRING_GDIO, USDIO)
            msg = (
                open_envelope(parse_envelope(out.data), _paired.shared_key)
                if out.char == USDIO
                else decode_plain(out.data)
            )
            assert msg.known_command is not None
    finally:
        session.close()
