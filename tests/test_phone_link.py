"""The phone link's own behaviour: steps, timeouts, isolation between phones; the
``lockgw-unlock-v2`` exchange by default, v1 only where ``accept_v1`` allows it."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.phone_link import PhoneLink
from protocols.exchange import ImpostorError, PhoneExchange
from protocols.phone import (
    Challenge,
    Hello,
    Proof,
    Result,
    SealedHello,
    SignedChallenge,
    SignedResult,
    decode_frame,
    encode_frame,
    pack,
)
from tests.exchange_kit import site_pair


class RecordingDoor:
    """A DoorHandler that records what the link hands it (the link is the unit under test)."""

    def __init__(self, delay: float = 0.0, *, accept_v1: bool = False) -> None:
        self.delay = delay
        self.exchange, self.phone = site_pair("site-t", accept_v1=accept_v1)
        self.attempts: list[tuple[Hello, Proof]] = []
        self.bindings: list[tuple[bytes, bytes] | None] = []
        self.malformed_calls: list[tuple[str | None, str]] = []

    def challenge(self) -> Challenge:
        return Challenge(nonce=b"\x07" * 16, site="site-t")

    async def attempt(
        self,
        hello: Hello,
        challenge: Challenge,
        proof: Proof,
        peer: str,
        *,
        binding: tuple[bytes, bytes] | None = None,
    ) -> Result:
        await asyncio.sleep(self.delay)
        self.attempts.append((hello, proof))
        self.bindings.append(binding)
        return Result(granted=True, reason="ok", event=f"ev-{len(self.attempts)}")

    async def malformed(self, peer: str, door: str | None, detail: str) -> Result:
        self.malformed_calls.append((door, detail))
        return Result(granted=False, reason="malformed", event="ev-m")


async def _read(reader: asyncio.StreamReader) -> object:
    n = int.from_bytes(await reader.readexactly(4), "big")
    return decode_frame(await reader.readexactly(n))


async def _exchange(port: int, phone: PhoneExchange, door: str = "front") -> Result:
    """A v2 exchange: sealed hello, signed challenge checked, signed result checked."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        sealed, h = phone.seal(Hello(door=door, action="unlock", token=b"tok"))
        writer.write(pack(encode_frame(sealed)))
        ch = await _read(reader)
        assert isinstance(ch, SignedChallenge)
        phone.check_challenge(ch, h)
        writer.write(pack(encode_frame(Proof(sig=b"\x01" * 64))))
        res = await _read(reader)
        assert isinstance(res, SignedResult)
        return phone.check_result(res, h)
    finally:
        writer.close()
        await writer.wait_closed()


async def _exchange_v1(port: int, door: str = "front") -> Result:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(pack(encode_frame(Hello(door=door, action="unlock", token=b"tok"))))
        ch = await _read(reader)
        if isinstance(ch, Result):
            return ch
        assert isinstance(ch, Challenge)
        writer.write(pack(encode_frame(Proof(sig=b"\x01" * 64))))
        res = await _read(reader)
        assert isinstance(res, Result)
        return res
    finally:
        writer.close()
        await writer.wait_closed()


async def test_a_full_exchange_reaches_the_door_handler() -> None:
    door = RecordingDoor()
    async with PhoneLink(door, "127.0.0.1:0") as link:
        res = await _exchange(link.port, door.phone)
    assert res.granted and res.event == "ev-1"
    assert door.attempts[0][0].door == "front"
    assert door.attempts[0][0].token == b"tok"  # opened from the sealed hello
    binding = door.bindings[0]
    assert binding is not None and len(binding[0]) == len(binding[1]) == 32


async def test_a_v1_hello_is_refused_malformed_unless_the_site_accepts_v1() -> None:
    door = RecordingDoor()
    async with PhoneLink(door, "127.0.0.1:0") as link:
        res = await _exchange_v1(link.port)
    assert not res.granted and res.reason == "malformed"
    assert not door.attempts
    assert "lockgw-unlock-v1" in door.malformed_calls[0][1]
    assert "accept_v1" in door.malformed_calls[0][1]

    door = RecordingDoor(accept_v1=True)
    async with PhoneLink(door, "127.0.0.1:0") as link:
        res = await _exchange_v1(link.port)
        assert (await _exchange(link.port, door.phone)).granted  # v2 works beside it
    assert res.granted and door.bindings == [None, door.bindings[1]]


async def test_a_hello_sealed_to_another_site_is_malformed_and_the_answer_is_signed() -> None:
    """Sealed to another key: the gateway cannot open it and says malformed — signed, so
    the phone knows it was the site's gateway that refused."""
    door = RecordingDoor()
    _, stranger = site_pair("site-t")
    async with PhoneLink(door, "127.0.0.1:0") as link:
        reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
        sealed, h = stranger.seal(Hello(door="front", action="unlock", token=b"tok"))
        writer.write(pack(encode_frame(sealed)))
        res = await _read(reader)
        writer.close()
        await writer.wait_closed()
    assert isinstance(res, SignedResult) and res.reason == "malformed"
    assert door.phone.check_result(res, h).reason == "malformed"
    with pytest.raises(ImpostorError):  # and no one else could have made it
        stranger.check_result(res, h)
    assert "does not open" in door.malformed_calls[0][1] and not door.attempts


async def test_a_tampered_sealed_hello_does_not_open() -> None:
    door = RecordingDoor()
    async with PhoneLink(door, "127.0.0.1:0") as link:
        reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
        sealed, _ = door.phone.seal(Hello(door="front", action="unlock", token=b"tok"))
        bad = bytearray(sealed.sealed)
        bad[40] ^= 1
        writer.write(pack(encode_frame(SealedHello(sealed=bytes(bad)))))
        res = await _read(reader)
        writer.close()
        await writer.wait_closed()
    assert isinstance(res, SignedResult) and res.reason == "malformed" and not door.attempts


async def test_a_silent_phone_is_dropped_and_does_not_stall_another() -> None:
    door = RecordingDoor()
    async with PhoneLink(door, "127.0.0.1:0", step_timeout=0.5) as link:
        _r, silent = await asyncio.open_connection("127.0.0.1", link.port)
        t0 = time.monotonic()
        res = await _exchange(link.port, door.phone)
        assert res.granted
        assert time.monotonic() - t0 < 0.5  # served while the silent one waits
        assert await _r.read() == b""  # the silent phone is closed after its step timeout
        silent.close()
        await silent.wait_closed()


async def test_phones_proceed_in_parallel() -> None:
    door = RecordingDoor(delay=0.3)
    async with PhoneLink(door, "127.0.0.1:0") as link:
        t0 = time.monotonic()
        results = await asyncio.gather(
            *(_exchange(link.port, door.phone, f"d{i}") for i in range(10))
        )
        elapsed = time.monotonic() - t0
    assert all(r.granted for r in results)
    assert elapsed < 0.3 * 5  # not serialised


async def test_a_malformed_hello_is_answered_malformed_and_reported() -> None:
    door = RecordingDoor()
    async with PhoneLink(door, "127.0.0.1:0") as link:
        reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
        writer.write(pack(b"\xa1\x61t\x63bye"))
        res = await _read(reader)
        writer.close()
        await writer.wait_closed()
    assert isinstance(res, Result) and res.reason == "malformed" and not res.granted
    assert door.malformed_calls and not door.attempts


async def test_an_oversize_frame_closes_the_connection_without_an_answer() -> None:
    door = RecordingDoor()
    async with PhoneLink(door, "127.0.0.1:0") as link:
        reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
        writer.write((5000).to_bytes(4, "big"))
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
    assert door.malformed_calls and "exceeds" in door.malformed_calls[0][1]


async def test_proof_out_of_order_is_malformed() -> None:
    door = RecordingDoor()
    async with PhoneLink(door, "127.0.0.1:0") as link:
        reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
        writer.write(pack(encode_frame(Proof(sig=b"\x01" * 64))))
        res = await _read(reader)
        writer.close()
        await writer.wait_closed()
    assert isinstance(res, Result) and res.reason == "malformed"


def test_a_sealed_hello_with_bad_length_or_padding_does_not_open() -> None:
    """The plaintext is len ‖ hello ‖ zeros to a multiple of 256: anything else is refused."""
    from protocols.errors import FrameError
    from protocols.exchange import SUITE, hello_info

    gw, phone = site_pair("site-t")
    body = encode_frame(Hello(door="front", action="unlock", token=b"tok"))
    good = len(body).to_bytes(2, "big") + body
    good += bytes(-len(good) % 256)
    pk = phone.exchange_key
    hello, _ = gw.open_hello(SealedHello(sealed=SUITE.encrypt(good, pk, info=hello_info("site-t"))))
    assert hello.token == b"tok"
    for bad in (
        good[:-1] + b"\x01",  # padding not zero
        good[:-1],  # not a multiple of 256
        (len(good)).to_bytes(2, "big") + good[2:],  # length beyond the plaintext
    ):
        sealed = SealedHello(sealed=SUITE.encrypt(bad, pk, info=hello_info("site-t")))
        with pytest.raises(FrameError, match="length or padding"):
            gw.open_hello(sealed)
    other_site = SealedHello(sealed=SUITE.encrypt(good, pk, info=hello_info("site-u")))
    with pytest.raises(FrameError, match="does not open"):
        gw.open_hello(other_site)
