"""CONTRACT §3 frames: strict decoding, loopback framing, BLE chunks."""

from __future__ import annotations

import contextlib

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import FrameError
from protocols.phone import (
    MAX_FRAME,
    Challenge,
    FrameBuffer,
    Hello,
    Proof,
    Reassembler,
    Result,
    chunk,
    decode_frame,
    encode_frame,
    pack,
)

FRAMES = [
    Hello(door="front", action="unlock", token=b"\x01" * 300),
    Hello(door="front", action="open", token_ref=b"\x02" * 16),
    Challenge(nonce=b"\x03" * 16, site="site-1"),
    Proof(sig=b"\x04" * 64),
    Result(granted=True, reason="ok", event="0190-abc"),
]


@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: type(f).__name__)
def test_every_frame_round_trips(frame: object) -> None:
    assert decode_frame(encode_frame(frame)) == frame  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "m",
    [
        {"t": "hello", "door": "front", "action": "unlock"},  # neither token nor ref
        {"t": "hello", "door": "front", "action": "unlock", "token": b"x", "token_ref": b"y" * 16},
        {"t": "hello", "door": "front", "action": "dance", "token": b"x"},
        {"t": "hello", "door": "", "action": "unlock", "token": b"x"},
        {"t": "hello", "door": "front", "action": "unlock", "token": b"x" * 1025},
        {"t": "hello", "door": "front", "action": "unlock", "token_ref": b"y" * 15},
        {"t": "hello", "door": "front", "action": "unlock", "token": "text"},
        {"t": "hello", "door": "front", "action": "unlock", "token": b"x", "extra": 1},
        {"t": "challenge", "nonce": b"n" * 15, "site": "s"},
        {"t": "proof", "sig": b"s" * 63},
        {"t": "result", "granted": 1, "reason": "ok", "event": "e"},
        {"t": "bye"},
        {"door": "front"},
        ["t", "hello"],
    ],
)
def test_malformed_frames_are_refused(m: object) -> None:
    with pytest.raises(FrameError):
        decode_frame(cbor2.dumps(m))


@given(st.binary(max_size=600))
def test_hostile_bytes_give_frame_error_or_a_frame(data: bytes) -> None:
    with contextlib.suppress(FrameError):
        decode_frame(data)


@given(
    st.dictionaries(
        st.sampled_from(["t", "door", "action", "token", "token_ref", "nonce", "sig", "site"]),
        st.one_of(st.text(max_size=20), st.binary(max_size=70), st.integers(), st.booleans()),
    )
)
def test_hostile_maps_never_crash_the_decoder(m: dict[str, object]) -> None:
    with contextlib.suppress(FrameError):
        decode_frame(cbor2.dumps(m))


def test_loopback_framing_splits_and_joins() -> None:
    buf = FrameBuffer()
    data = pack(b"abc") + pack(b"") + pack(b"xy" * 100)
    for i in range(0, len(data), 7):
        buf.feed(data[i : i + 7])
    out = []
    while (f := buf.next_frame()) is not None:
        out.append(f)
    assert out == [b"abc", b"", b"xy" * 100]


def test_oversize_declared_length_is_refused_before_the_body() -> None:
    buf = FrameBuffer()
    buf.feed((MAX_FRAME + 1).to_bytes(4, "big"))
    with pytest.raises(FrameError):
        buf.next_frame()
    with pytest.raises(FrameError):
        pack(b"x" * (MAX_FRAME + 1))


@given(st.binary(max_size=MAX_FRAME), st.integers(min_value=23, max_value=517))
def test_chunks_reassemble_at_every_mtu(frame: bytes, mtu: int) -> None:
    r = Reassembler()
    parts = chunk(frame, mtu)
    assert all(len(p) <= mtu - 3 for p in parts)
    got = [r.add(p) for p in parts]
    assert got[-1] == frame
    assert all(g is None for g in got[:-1])


def test_a_lost_chunk_is_detected() -> None:
    parts = chunk(b"z" * 200, 23)
    r = Reassembler()
    r.add(parts[0])
    with pytest.raises(FrameError):
        r.add(parts[2])
    with pytest.raises(FrameError):
        r.add(parts[3])  # no first chunk any more


def test_frames_must_be_plain_cbor_with_one_meaning() -> None:
    """Trailing bytes, duplicate keys, tags, floats and long-form lengths are refused
    (cbor2.loads accepted all of them: it ignores trailing bytes, keeps the last of two
    keys and builds objects from tags — a regex from tag 35 — out of a stranger's bytes)."""
    good = cbor2.dumps({"t": "proof", "sig": b"s" * 64}, canonical=True)
    assert decode_frame(good) == Proof(sig=b"s" * 64)
    dup = b"\xa3" + good[1:] + b"\x61t\x65proof"  # a third entry repeats "t"
    tagged = cbor2.dumps({"t": "proof", "sig": cbor2.CBORTag(35, "a+")}, canonical=True)
    floaty = cbor2.dumps({"t": "result", "granted": 1.0, "reason": "ok", "event": "e"})
    long_len = b"\xa2\x61t\x78\x05proof\x63sig\x58\x40" + b"s" * 64  # "proof" with a 1-byte length
    for bad, why in (
        (good + b"\x00", "trailing"),
        (dup, "duplicate"),
        (tagged, "tag"),
        (floaty, "float"),
        (long_len, "shortest"),
    ):
        with pytest.raises(FrameError) as exc:
            decode_frame(bad)
        assert why in str(exc.value), (why, str(exc.value))
