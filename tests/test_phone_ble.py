"""The BLE phone link: chunked exchange through the session core; a clean refusal without BlueZ."""

from __future__ import annotations

import asyncio

import pytest

from gateway.phone_ble import BleSessions, BluezPhonePeripheral, PhoneBleUnavailable
from protocols.phone import (
    Challenge,
    Hello,
    Proof,
    Reassembler,
    Result,
    chunk,
    decode_frame,
    encode_frame,
)
from tests.exchange_kit import site_pair


class Door:
    #: these tests carry v1 frames: the transport, not the exchange's cryptography
    exchange = site_pair("site-b", accept_v1=True)[0]

    def __init__(self) -> None:
        self.attempts: list[Hello] = []

    def challenge(self) -> Challenge:
        return Challenge(nonce=b"\x05" * 16, site="site-b")

    async def attempt(
        self,
        hello: Hello,
        challenge: Challenge,
        proof: Proof,
        peer: str,
        *,
        binding: tuple[bytes, bytes] | None = None,
    ) -> Result:
        self.attempts.append(hello)
        return Result(granted=True, reason="ok", event="ev-ble")

    async def malformed(self, peer: str, door: str | None, detail: str) -> Result:
        return Result(granted=False, reason="malformed", event="ev-bad")


class Air:
    """What the central receives: notifications reassembled into frames."""

    def __init__(self) -> None:
        self.r = Reassembler()
        self.frames: asyncio.Queue[object] = asyncio.Queue()

    async def notify(self, data: bytes) -> None:
        assert len(data) <= 23 - 3
        frame = self.r.add(data)
        if frame is not None:
            await self.frames.put(decode_frame(frame))


async def test_a_chunked_exchange_over_a_small_mtu_reaches_the_door() -> None:
    door, air = Door(), Air()
    sessions = BleSessions(door, air.notify, mtu=23)
    hello = Hello(door="front", action="unlock", token=b"T" * 400)
    for part in chunk(encode_frame(hello), 23):
        await sessions.on_write("/org/bluez/hci0/dev_1", part)
    assert isinstance(await air.frames.get(), Challenge)
    for part in chunk(encode_frame(Proof(sig=b"S" * 64)), 23):
        await sessions.on_write("/org/bluez/hci0/dev_1", part)
    result = await asyncio.wait_for(air.frames.get(), 5)
    assert isinstance(result, Result) and result.granted
    assert door.attempts[0].token == b"T" * 400


async def test_a_broken_chunk_sequence_drops_the_session() -> None:
    door, air = Door(), Air()
    sessions = BleSessions(door, air.notify, mtu=23)
    parts = chunk(encode_frame(Hello(door="front", action="unlock", token=b"T" * 100)), 23)
    await sessions.on_write("dev", parts[0])
    await sessions.on_write("dev", parts[2])
    await sessions.close()
    assert air.frames.empty() and not door.attempts


async def test_without_bluez_the_peripheral_refuses_clearly() -> None:
    try:
        async with BluezPhonePeripheral(Door(), adapter="hci9"):
            pytest.skip("a BlueZ adapter hci9 exists here")
    except PhoneBleUnavailable as exc:
        assert "BLE phone link is off" in str(exc)
