"""protocols/gattlink.py: strict, size-limited decoding; encode/decode round trips."""

from __future__ import annotations

import contextlib
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import gattlink as gl
from protocols.errors import FrameError, Reason

ids = st.integers(0, gl.MAX_ID)
handles = st.integers(1, gl.MAX_HANDLE)
values = st.binary(max_size=gl.MAX_VALUE)
uuids = st.uuids().map(str)
texts = st.text(max_size=64)


@st.composite
def service_tables(draw: st.DrawFn) -> tuple[gl.ServiceDef, ...]:
    pool = iter(draw(st.lists(handles, min_size=60, max_size=60, unique=True)))
    services = []
    for _ in range(draw(st.integers(0, 4))):
        chars = []
        for _ in range(draw(st.integers(0, 4))):
            descs = tuple(
                gl.DescriptorDef(draw(uuids), next(pool)) for _ in range(draw(st.integers(0, 2)))
            )
            chars.append(
                gl.CharacteristicDef(draw(uuids), next(pool), draw(st.integers(0, 0xFF)), descs)
            )
        services.append(gl.ServiceDef(draw(uuids), next(pool), tuple(chars)))
    return tuple(services)


central_frames = st.one_of(
    st.just(gl.Scan()),
    st.builds(gl.Connect, st.integers(1, 255)),
    st.builds(gl.Discover, ids),
    st.builds(gl.Read, ids, handles),
    st.builds(gl.Write, ids, handles, values),
    st.builds(gl.WriteCommand, handles, values),
    st.builds(gl.Subscribe, ids, handles),
    st.builds(gl.Unsubscribe, ids, handles),
    st.builds(gl.Disconnect, st.text(max_size=200)),
)
peripheral_frames = st.one_of(
    st.builds(
        gl.Advertisement,
        texts,
        st.lists(uuids, max_size=gl.MAX_ADV_UUIDS).map(tuple),
        st.dictionaries(st.integers(0, 0xFFFF), st.binary(max_size=gl.MAX_MFR_DATA), max_size=8),
    ),
    st.builds(gl.Hello, texts, st.integers(gl.MIN_MTU, gl.MAX_MTU), st.integers(1, 255)),
    st.builds(gl.Services, ids, service_tables()),
    st.builds(gl.Value, ids, values),
    st.builds(gl.Ok, ids),
    st.builds(gl.ErrorReply, ids, st.integers(1, 0xFF), st.text(max_size=200)),
    st.builds(gl.Notification, handles, values),
    st.builds(gl.Disconnect, st.text(max_size=200)),
)


@given(central_frames)
def test_central_frames_round_trip(frame: gl.CentralFrame) -> None:
    assert gl.decode_from_central(gl.encode(frame)) == frame


@given(peripheral_frames)
def test_peripheral_frames_round_trip(frame: gl.PeripheralFrame) -> None:
    assert gl.decode_from_peripheral(gl.encode(frame)) == frame


@given(st.binary(max_size=600))
def test_arbitrary_bytes_are_a_frame_or_a_frame_error(data: bytes) -> None:
    for decode in (gl.decode_from_central, gl.decode_from_peripheral):
        try:
            decode(data)
        except FrameError as exc:
            assert exc.reason is Reason.MALFORMED


json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=5) | st.integers(), children, max_size=4)
    ),
    max_leaves=20,
)
frame_types = st.sampled_from(
    [
        "scan",
        "connect",
        "discover",
        "read",
        "write",
        "write_cmd",
        "subscribe",
        "unsubscribe",
        "disconnect",
        "adv",
        "hello",
        "services",
        "value",
        "ok",
        "error",
        "notify",
        "bogus",
    ]
)


@given(
    frame_types,
    st.dictionaries(
        st.sampled_from(
            [
                "id",
                "h",
                "v",
                "u",
                "s",
                "c",
                "p",
                "d",
                "name",
                "mtu",
                "code",
                "msg",
                "reason",
                "uuids",
                "mfr",
                "x",
            ]
        ),
        json_like,
        max_size=6,
    ),
)
def test_hostile_maps_are_refused_with_frame_error_only(t: str, fields: dict[str, Any]) -> None:
    data = cbor2.dumps({"t": t, **fields})
    for decode in (gl.decode_from_central, gl.decode_from_peripheral):
        with contextlib.suppress(FrameError):  # anything else escaping fails the test
            decode(data)


@given(st.one_of(central_frames, peripheral_frames), st.data())
def test_truncated_frames_never_come_out_of_the_buffer(frame: Any, data: st.DataObject) -> None:
    packed = gl.pack(frame)
    cut = data.draw(st.integers(0, len(packed) - 1))
    buf = gl.FrameBuffer()
    buf.feed(packed[:cut])
    assert buf.next_frame() is None
    buf.feed(packed[cut:])
    assert buf.next_frame() == packed[4:]
    assert buf.next_frame() is None


def test_wrong_direction_is_refused() -> None:
    with pytest.raises(FrameError, match="central does not send"):
        gl.decode_from_central(gl.encode(gl.Notification(1, b"x")))
    with pytest.raises(FrameError, match="peripheral does not send"):
        gl.decode_from_peripheral(gl.encode(gl.Write(1, 2, b"x")))


@pytest.mark.parametrize(
    ("m", "problem"),
    [
        ({"t": "read", "id": 1, "h": 0}, "'h' must be an integer"),
        ({"t": "read", "id": 1, "h": 70000}, "'h' must be an integer"),
        ({"t": "read", "id": -1, "h": 1}, "'id' must be an integer"),
        ({"t": "read", "id": True, "h": 1}, "'id' must be an integer"),
        ({"t": "read", "id": 1}, "missing keys"),
        ({"t": "read", "id": 1, "h": 1, "x": 0}, "unexpected keys"),
        ({"t": "write", "id": 1, "h": 1, "v": bytes(513)}, "at most 512"),
        ({"t": "write", "id": 1, "h": 1, "v": "text"}, "byte string"),
        ({"t": "hello", "v": 1, "name": "x", "mtu": 22}, "'mtu'"),
        ({"t": "error", "id": 1, "code": 0, "msg": ""}, "'code'"),
        (
            {
                "t": "services",
                "id": 1,
                "s": [{"u": "0000180F-0000-1000-8000-00805F9B34FB", "h": 1, "c": []}],
            },
            "lower-case",
        ),
        (
            {
                "t": "services",
                "id": 1,
                "s": [
                    {
                        "u": gl.normalize_uuid(1),
                        "h": 1,
                        "c": [{"u": gl.normalize_uuid(2), "h": 1, "p": 2, "d": []}],
                    }
                ],
            },
            "appears twice",
        ),
        ({"t": "adv", "name": "x", "uuids": [], "mfr": {70000: b""}}, "manufacturer id"),
        ({"t": 5}, "missing frame type"),
        ({"t": "teleport"}, "unknown frame type"),
    ],
)
def test_each_defect_is_named(m: dict[str, Any], problem: str) -> None:
    with pytest.raises(FrameError, match=problem):
        gl.decode_from_central(cbor2.dumps(m)) if m.get("t") in {
            "read",
            "write",
        } else gl.decode_from_peripheral(cbor2.dumps(m))


def test_not_a_map_and_not_cbor() -> None:
    with pytest.raises(FrameError, match="CBOR map"):
        gl.decode_from_central(cbor2.dumps([1, 2]))
    with pytest.raises(FrameError, match="not CBOR"):
        gl.decode_from_central(b"\xa1")  # a map that never arrives
    with pytest.raises(FrameError, match="CBOR map"):
        gl.decode_from_central(b"\xff")  # a lone 'break' (what the corrupt fault sends)
    with pytest.raises(FrameError, match="bytes after the CBOR map"):
        gl.decode_from_central(gl.encode(gl.Scan()) + b"\x00")
    with pytest.raises(FrameError, match="exceeds"):
        gl.decode_from_central(bytes(gl.MAX_FRAME + 1))


def test_declared_length_is_checked_before_the_body_arrives() -> None:
    buf = gl.FrameBuffer()
    buf.feed((gl.MAX_FRAME + 1).to_bytes(4, "big"))
    with pytest.raises(FrameError, match="declared frame length"):
        buf.next_frame()
    with pytest.raises(FrameError):
        gl.FrameBuffer.body_length(b"\x00\x00\x00\x00")


def test_encode_refuses_what_decode_would_refuse() -> None:
    with pytest.raises(FrameError):
        gl.encode(gl.Write(1, 0, b""))
    with pytest.raises(FrameError):
        gl.encode(gl.Value(1, bytes(513)))
    big = tuple(
        gl.ServiceDef(
            gl.normalize_uuid(i),
            i * 100 + 1,
            tuple(
                gl.CharacteristicDef(gl.normalize_uuid(j), i * 100 + 2 + j, 2) for j in range(40)
            ),
        )
        for i in range(1, 5)
    )
    with pytest.raises(FrameError, match="more than 128 characteristics"):
        gl.encode(gl.Services(1, big))


def test_uuid_and_address_helpers() -> None:
    assert gl.normalize_uuid(0x180F) == "0000180f-0000-1000-8000-00805f9b34fb"
    assert gl.normalize_uuid("2A19") == "00002a19-0000-1000-8000-00805f9b34fb"
    assert (
        gl.normalize_uuid("8E5C0001-6C6F-636B-6777-000000000001")
        == "8e5c0001-6c6f-636b-6777-000000000001"
    )
    with pytest.raises(ValueError):
        gl.normalize_uuid("not-a-uuid")
    assert gl.parse_address("loopback://127.0.0.1:47001") == ("127.0.0.1", 47001)
    assert gl.parse_address("loopback://[::1]:47001") == ("::1", 47001)
    for bad in (
        "127.0.0.1:47001",
        "loopback://127.0.0.1",
        "loopback://:5",
        "loopback://h:0",
        "loopback://h:99999",
    ):
        with pytest.raises(ValueError, match="loopback"):
            gl.parse_address(bad)
