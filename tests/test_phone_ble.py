"""The BLE phone link's transport, without BlueZ: per-central sessions, chunks by each
central's MTU, a phone that breaks its chunks, vanishes or floods; and a clear refusal
when BlueZ is not there. (Over BlueZ, end to end: ``tests/test_bluez_phones.py``.)"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest

from gateway.phone_ble import (
    BleSessions,
    BluezPhonePeripheral,
    PhoneBleBusy,
    PhoneBleUnavailable,
    bluez_problems,
)
from protocols.phone import (
    Challenge,
    Hello,
    PhoneFrame,
    Proof,
    Reassembler,
    Result,
    chunk,
    decode_frame,
    encode_frame,
)
from tests.exchange_kit import site_pair

DEV_A = "/org/bluez/hci0/dev_02_00_00_00_00_0A"
DEV_B = "/org/bluez/hci0/dev_02_00_00_00_00_0B"


class Door:
    """Each challenge fresh; the result names the nonce it answers (so a mix-up shows)."""

    #: these tests carry v1 frames: the transport, not the exchange's cryptography
    exchange = site_pair("site-b", accept_v1=True)[0]

    def __init__(self, hold: asyncio.Event | None = None) -> None:
        self.attempts: list[tuple[str, bytes]] = []
        self.malformed_calls: list[tuple[str, str]] = []
        self.hold = hold

    def challenge(self) -> Challenge:
        return Challenge(nonce=secrets.token_bytes(16), site="site-b")

    async def attempt(
        self,
        hello: Hello,
        challenge: Challenge,
        proof: Proof,
        peer: str,
        *,
        binding: tuple[bytes, bytes] | None = None,
    ) -> Result:
        if self.hold is not None:
            await self.hold.wait()
        self.attempts.append((peer, challenge.nonce))
        assert proof.sig[:16] == challenge.nonce  # the phone below signs "its" nonce
        return Result(granted=True, reason="ok", event=f"{peer}/{challenge.nonce.hex()}")

    async def malformed(self, peer: str, door: str | None, detail: str) -> Result:
        self.malformed_calls.append((peer, detail))
        return Result(granted=False, reason="malformed", event="ev-bad")


class Phone:
    """A central as the sessions see it: writes chunks, reads its answers."""

    def __init__(self, sessions: BleSessions, device: str, mtu: int) -> None:
        self.sessions, self.device, self.mtu = sessions, device, mtu
        self.reads: list[bytes] = []

    def send(self, frame: PhoneFrame) -> None:
        for part in chunk(encode_frame(frame), self.mtu):
            self.sessions.on_write(self.device, part, self.mtu)

    async def recv(self) -> PhoneFrame:
        r = Reassembler()
        while True:
            part = await self.sessions.on_read(self.device, self.mtu)
            assert part, "nothing to read"
            self.reads.append(part)
            frame = r.add(part)
            if frame is not None:
                return decode_frame(frame)

    async def unlock(self, token: bytes = b"T" * 400) -> Result:
        self.send(Hello(door="front", action="unlock", token=token))
        challenge = await self.recv()
        assert isinstance(challenge, Challenge)
        self.send(Proof(sig=challenge.nonce + b"S" * 48))
        result = await self.recv()
        assert isinstance(result, Result)
        return result


async def test_a_chunked_exchange_over_the_smallest_mtu_reaches_the_door() -> None:
    door = Door()
    sessions = BleSessions(door)
    phone = Phone(sessions, DEV_A, 23)
    result = await phone.unlock()
    assert result.granted and result.event.startswith("ble:02:00:00:00:00:0A/")
    assert door.attempts and all(len(p) <= 20 for p in phone.reads)


async def test_each_central_gets_chunks_as_large_as_its_own_mtu() -> None:
    sessions = BleSessions(Door())
    small, large = Phone(sessions, DEV_A, 23), Phone(sessions, DEV_B, 100)
    await asyncio.gather(small.unlock(), large.unlock())
    assert max(map(len, small.reads)) == 20
    assert max(map(len, large.reads)) > 20 and all(len(p) <= 97 for p in large.reads)


async def test_phones_at_once_each_hear_their_own_challenge_and_result() -> None:
    """Interleaved writes and reads of several centrals: every phone's result answers
    the nonce of its own challenge, and every attempt is recorded under its own peer."""
    hold = asyncio.Event()
    door = Door(hold)
    sessions = BleSessions(door)
    phones = [Phone(sessions, f"/org/bluez/hci0/dev_02_00_00_00_01_{i:02X}", 23) for i in range(5)]
    tasks = [asyncio.create_task(p.unlock()) for p in phones]
    await asyncio.sleep(0.1)  # every phone has written its hello and is reading
    assert sessions.active == 5
    hold.set()
    results = await asyncio.gather(*tasks)
    for phone, result in zip(phones, results, strict=True):
        peer, nonce_hex = result.event.split("/")
        assert peer == "ble:" + phone.device.rsplit("dev_", 1)[1].replace("_", ":")
        assert (peer, bytes.fromhex(nonce_hex)) in door.attempts
    assert len({r.event for r in results}) == 5


async def test_a_read_by_another_central_never_returns_someone_elses_answer() -> None:
    sessions = BleSessions(Door(), read_wait=0.05)
    a = Phone(sessions, DEV_A, 23)
    a.send(Hello(door="front", action="unlock", token=b"T" * 100))
    assert await sessions.on_read(DEV_B, 23) == b""  # B has no session: nothing
    assert isinstance(await a.recv(), Challenge)


async def test_a_broken_chunk_sequence_is_answered_malformed() -> None:
    door = Door()
    sessions = BleSessions(door)
    parts = chunk(encode_frame(Hello(door="front", action="unlock", token=b"T" * 100)), 23)
    sessions.on_write(DEV_A, parts[0], 23)
    sessions.on_write(DEV_A, parts[2], 23)  # parts[1] lost
    answer = await Phone(sessions, DEV_A, 23).recv()
    assert isinstance(answer, Result) and answer.reason == "malformed"
    assert door.malformed_calls[0][0] == "ble:02:00:00:00:00:0A"
    assert "sequence" in door.malformed_calls[0][1] and not door.attempts


async def test_a_phone_that_disconnects_mid_exchange_ends_its_session_at_once() -> None:
    door = Door()
    sessions = BleSessions(door, step_timeout=30)
    phone = Phone(sessions, DEV_A, 23)
    phone.send(Hello(door="front", action="unlock", token=b"T" * 100))
    assert isinstance(await phone.recv(), Challenge)
    sessions.disconnected(DEV_A)
    assert sessions.active == 0
    await asyncio.sleep(0)
    # the same phone, connected again, starts afresh and is served
    assert (await phone.unlock()).granted
    assert len(door.attempts) == 1


async def test_a_silent_phone_is_ended_by_the_step_timeout() -> None:
    sessions = BleSessions(Door(), step_timeout=0.2)
    phone = Phone(sessions, DEV_A, 23)
    phone.send(Hello(door="front", action="unlock", token=b"T" * 100))
    assert isinstance(await phone.recv(), Challenge)
    async with asyncio.timeout(5):
        while sessions.active:  # noqa: ASYNC110 - a monitor polls the count too
            await asyncio.sleep(0.02)


async def test_more_phones_than_sessions_are_refused_and_a_flood_is_dropped() -> None:
    sessions = BleSessions(Door(), max_sessions=1)
    hello = chunk(encode_frame(Hello(door="front", action="unlock", token=b"T" * 10)), 185)
    sessions.on_write(DEV_A, hello[0], 185)
    with pytest.raises(PhoneBleBusy):
        sessions.on_write(DEV_B, hello[0], 185)
    for _ in range(4):  # frames far ahead of the exchange: the session goes
        sessions.on_write(DEV_A, hello[0], 185)
    assert sessions.active == 0
    await sessions.close()


async def test_without_bluez_the_link_refuses_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/no-bus")
    (problem,) = await bluez_problems("hci0")
    assert problem.startswith("bluetooth: the system D-Bus cannot be reached")
    with pytest.raises(PhoneBleUnavailable, match="system D-Bus cannot be reached"):
        async with BluezPhonePeripheral(Door(), advert_key=bytes(32), adapter="hci0"):
            pass


async def test_a_failed_rotation_is_tried_again_until_the_advertisement_is_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A rotation whose register step failed leaves nothing registered: the next look
    must not stop at the unregister BlueZ refuses ("does not exist"), or the hub would
    stay silent for good. BlueZ stood in for by ``_call``: its first register fails."""
    from dbus_fast.errors import DBusError

    import gateway.phone_ble as pb

    calls: list[str] = []
    registered = False

    async def call(bus: object, path: str, interface: str, member: str, *args: object) -> list[object]:
        nonlocal registered
        calls.append(member)
        if member == "UnregisterAdvertisement":
            if not registered:
                raise DBusError("org.bluez.Error.DoesNotExist", "no such advertisement")
            registered = False
        elif member == "RegisterAdvertisement":
            if calls.count("RegisterAdvertisement") == 1:
                raise DBusError("org.bluez.Error.Failed", "busy")
            registered = True
        return []

    class _App:
        adv_path = "/org/lockgw/phone/adv0"

        def epoch(self) -> int:  # a new epoch from the first look on
            return 7

    monkeypatch.setattr(pb, "_call", call)
    monkeypatch.setattr(pb, "CLOCK_LOOK", 0.05)
    p = BluezPhonePeripheral(Door(), advert_key=bytes(32), adapter="hci0")
    p._bus, p.up, p._objects, p._adv_epoch = object(), True, _App(), 6  # type: ignore[assignment]
    registered = True  # epoch 6's advertisement is up
    task = asyncio.create_task(p._rotate())
    try:
        async with asyncio.timeout(10):
            while p._adv_epoch != 7:  # noqa: ASYNC110 - the peripheral's own loop
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert registered and calls.count("RegisterAdvertisement") == 2, calls
