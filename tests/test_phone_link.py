"""The phone link's own behaviour: steps, timeouts, isolation between phones."""

from __future__ import annotations

import asyncio
import time

from gateway.phone_link import PhoneLink
from protocols.phone import (
    Challenge,
    Hello,
    Proof,
    Result,
    decode_frame,
    encode_frame,
    pack,
)


class RecordingDoor:
    """A DoorHandler that records what the link hands it (the link is the unit under test)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.attempts: list[tuple[Hello, Proof]] = []
        self.malformed_calls: list[tuple[str | None, str]] = []

    def challenge(self) -> Challenge:
        return Challenge(nonce=b"\x07" * 16, site="site-t")

    async def attempt(self, hello: Hello, challenge: Challenge, proof: Proof, peer: str) -> Result:
        await asyncio.sleep(self.delay)
        self.attempts.append((hello, proof))
        return Result(granted=True, reason="ok", event=f"ev-{len(self.attempts)}")

    async def malformed(self, peer: str, door: str | None, detail: str) -> Result:
        self.malformed_calls.append((door, detail))
        return Result(granted=False, reason="malformed", event="ev-m")


async def _read(reader: asyncio.StreamReader) -> object:
    n = int.from_bytes(await reader.readexactly(4), "big")
    return decode_frame(await reader.readexactly(n))


async def _exchange(port: int, door: str = "front") -> Result:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(pack(encode_frame(Hello(door=door, action="unlock", token=b"tok"))))
        ch = await _read(reader)
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
        res = await _exchange(link.port)
    assert res.granted and res.event == "ev-1"
    assert door.attempts[0][0].door == "front"


async def test_a_silent_phone_is_dropped_and_does_not_stall_another() -> None:
    door = RecordingDoor()
    async with PhoneLink(door, "127.0.0.1:0", step_timeout=0.5) as link:
        _r, silent = await asyncio.open_connection("127.0.0.1", link.port)
        t0 = time.monotonic()
        res = await _exchange(link.port)
        assert res.granted
        assert time.monotonic() - t0 < 0.5  # served while the silent one waits
        assert await _r.read() == b""  # the silent phone is closed after its step timeout
        silent.close()
        await silent.wait_closed()


async def test_phones_proceed_in_parallel() -> None:
    door = RecordingDoor(delay=0.3)
    async with PhoneLink(door, "127.0.0.1:0") as link:
        t0 = time.monotonic()
        results = await asyncio.gather(*(_exchange(link.port, f"d{i}") for i in range(10)))
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
