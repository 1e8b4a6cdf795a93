"""An independent Nuki client, pyNukiBT, pairs with and operates our Nuki simulator.

pyNukiBT connects through bleak-retry-connector's ``establish_connection``, which hands
its ``**kwargs`` to the bleak client class; pyNukiBT itself offers no way to choose a
bleak backend. The one patch below therefore replaces ``establish_connection`` *as
pyNukiBT's module sees it* with the same function plus ``backend=`` (the loopback
backend for ``loopback://`` addresses, exactly what ``drivers.ble`` picks). Nothing
else of pyNukiBT is touched: its framing, crypto, pairing and commands run unchanged.

The same transport also carries raw frames to pin the lock's refusals: a bad CRC, a
replayed encrypted frame, a wrong key — each answered with Nuki's error code.
"""

from __future__ import annotations

import asyncio
import functools
import struct
from collections.abc import AsyncIterator

import bleak_retry_connector
import nacl.public
import pytest
from bleak.backends.device import BLEDevice
from pyNukiBT import NukiDevice, NukiErrorException
from pyNukiBT import nuki as pynuki_module

from drivers.ble import client_backend_for, make_client
from drivers.nuki import NukiDriver
from protocols.device import Action
from protocols.events import LockState as GatewayLockState
from protocols.nuki import (
    PAIRING_GDIO,
    USDIO,
    Command,
    ErrorCode,
    ErrorReport,
    KeyturnerStates,
    LockState,
    RequestData,
    decode_plain,
    encode_encrypted,
    encode_plain,
    open_envelope,
    parse_envelope,
)
from protocols.nuki.frames import Message
from simulators.nuki import NukiSimulator


class MemorySecrets:
    def __init__(self) -> None:
        self.data: dict[str, dict[str, object]] = {}

    def load(self, device_id: str) -> dict[str, object] | None:
        return self.data.get(device_id)

    def save(self, device_id: str, secrets: dict[str, object]) -> None:
        self.data[device_id] = dict(secrets)


@pytest.fixture
async def sim() -> AsyncIterator[NukiSimulator]:
    async with NukiSimulator(pairing=True, motor_ms=30) as s:
        yield s


@pytest.fixture(autouse=True)
def pynukibt_uses_our_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """The minimal patch: pyNukiBT's establish_connection, with the backend for the address."""
    original = bleak_retry_connector.establish_connection

    async def establish_connection(
        client_class: type, device: BLEDevice, name: str, *a: object, **kw: object
    ) -> object:
        backend = client_backend_for(device)
        call = functools.partial(original, backend=backend) if backend is not None else original
        return await call(client_class, device, name, *a, **kw)

    monkeypatch.setattr(pynuki_module, "establish_connection", establish_connection)


async def pynuki(
    address: str,
    *,
    auth_id: bytes | None = None,
    lock_pk: bytes | None = None,
    secret: bytes | None = None,
) -> NukiDevice:
    sk = nacl.public.PrivateKey(secret) if secret is not None else nacl.public.PrivateKey.generate()
    dev = NukiDevice(
        address,
        auth_id,
        lock_pk,
        bytes(sk.public_key),
        bytes(sk),
        app_id=0x1234,
        name="pyNukiBT",
        ble_device=BLEDevice(address, "Nuki_SIM", None),
    )
    dev.command_response_timeout = 5
    dev.send_retry = 2
    await dev.connect()  # pyNukiBT learns the device type (its constants) from the GATT table
    return dev


async def pynuki_pair(address: str) -> tuple[NukiDevice, dict[str, bytes]]:
    dev = await pynuki(address)
    creds: dict[str, bytes] = await dev.pair()
    return dev, creds


async def test_pynukibt_pairs_with_our_simulator_and_operates_it(sim: NukiSimulator) -> None:
    dev, creds = await pynuki_pair(sim.address)
    assert creds["nuki_public_key"] == sim.lock.keypair.public
    assert creds["auth_id"] in sim.lock.authorizations
    assert sim.lock.pairing_mode is False  # a successful pairing ends pairing mode

    # a fresh pyNukiBT instance with only the stored credentials, as after a restart
    dev2 = await pynuki(
        sim.address,
        auth_id=creds["auth_id"],
        lock_pk=creds["nuki_public_key"],
        secret=dev._bridge_private_key,
    )
    try:
        await dev2.update_state()
        assert str(dev2.keyturner_state["lock_state"]) == "LOCKED"
        assert str(dev2.keyturner_state["door_sensor_state"]) == "DOOR_CLOSED"
        assert dev2.battery_percentage == 84 and dev2.is_battery_critical is False
        assert dev2.config["nuki_id"] == sim.lock.nuki_id
        assert list(dev2.config["firmware_version"]) == [3, 9, 8]

        status = await dev2.lock_action(dev2._const.LockAction.UNLOCK, wait_for_completed=True)
        assert str(status.status) == "COMPLETED"
        assert sim.lock.lock_state is LockState.UNLOCKED
        await dev2.update_state()
        assert str(dev2.keyturner_state["lock_state"]) == "UNLOCKED"

        await dev2.lock_action(dev2._const.LockAction.UNLATCH, wait_for_completed=True)
        assert sim.lock.lock_state is LockState.UNLATCHED
        await dev2.lock_action(dev2._const.LockAction.LOCK, wait_for_completed=True)
        assert sim.lock.lock_state is LockState.LOCKED

        await sim.set_battery(8, critical=True)
        await dev2.update_state()
        assert dev2.battery_percentage == 8 and dev2.is_battery_critical is True
    finally:
        await dev2.disconnect()


async def test_pynukibt_pairing_is_refused_outside_pairing_mode(sim: NukiSimulator) -> None:
    sim.set_pairing(False)
    dev = await pynuki(sim.address)
    try:
        with pytest.raises(NukiErrorException) as err:
            await dev.pair()
        assert int(err.value.error_code) == ErrorCode.P_ERROR_NOT_PAIRING
    finally:
        await dev.disconnect()


async def test_pynukibt_with_a_wrong_key_is_refused_not_authorized(sim: NukiSimulator) -> None:
    _, creds = await pynuki_pair(sim.address)
    intruder = await pynuki(sim.address, auth_id=creds["auth_id"], lock_pk=creds["nuki_public_key"])
    try:
        with pytest.raises(NukiErrorException) as err:
            await intruder.update_state()
        assert int(err.value.error_code) == ErrorCode.K_ERROR_NOT_AUTHORIZED
    finally:
        await intruder.disconnect()


async def test_pynukibt_lock_action_on_a_jammed_lock_reports_motor_blocked(
    sim: NukiSimulator,
) -> None:
    dev, _ = await pynuki_pair(sim.address)
    await sim.set_jammed(True)
    try:
        await dev.update_state()
        with pytest.raises(NukiErrorException) as err:
            await dev.lock_action(dev._const.LockAction.UNLOCK, wait_for_completed=True)
        assert int(err.value.error_code) == ErrorCode.K_ERROR_MOTOR_BLOCKED
        assert str(dev.keyturner_state["lock_state"]) == "MOTOR_BLOCKED"
    finally:
        await dev.disconnect()


# -- raw frames over the loopback transport ----------------------------------------------
class RawLink:
    def __init__(self, address: str) -> None:
        self.client = make_client(address)
        self.inbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    async def __aenter__(self) -> RawLink:
        await self.client.connect()
        for char in (PAIRING_GDIO, USDIO):
            await self.client.start_notify(
                char, lambda c, d: self.inbox.put_nowait((c.uuid, bytes(d)))
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.disconnect()

    async def send(self, char: str, frame: bytes) -> tuple[str, bytes]:
        await self.client.write_gatt_char(char, frame, response=True)
        async with asyncio.timeout(5):
            return await self.inbox.get()


def _error(msg: Message) -> ErrorCode | None:
    assert msg.command == Command.ERROR_REPORT
    return ErrorReport.decode(msg.payload).error


async def test_bad_crc_is_refused_with_error_bad_crc(sim: NukiSimulator) -> None:
    frame = bytearray(encode_plain(Command.REQUEST_DATA, RequestData(Command.PUBLIC_KEY).encode()))
    frame[-2] ^= 0x55
    async with RawLink(sim.address) as link:
        char, answer = await link.send(PAIRING_GDIO, bytes(frame))
    assert char == PAIRING_GDIO and _error(decode_plain(answer)) is ErrorCode.ERROR_BAD_CRC


async def test_replayed_frame_is_refused_with_bad_nonce(sim: NukiSimulator) -> None:
    _, creds = await pynuki_pair(sim.address)
    auth = sim.lock.authorizations[creds["auth_id"]]
    frame = encode_encrypted(
        auth.key, auth.auth_id, Command.REQUEST_DATA, RequestData(Command.KEYTURNER_STATES).encode()
    )
    async with RawLink(sim.address) as link:
        _, first = await link.send(USDIO, frame)
        states = open_envelope(parse_envelope(first), auth.key)
        assert KeyturnerStates.decode(states.payload).lock_state is LockState.LOCKED
        _, again = await link.send(USDIO, frame)  # an eavesdropper's replay of the same bytes
    assert _error(open_envelope(parse_envelope(again), auth.key)) is ErrorCode.K_ERROR_BAD_NONCE


async def test_unknown_authorization_is_refused_not_authorized(sim: NukiSimulator) -> None:
    frame = encode_encrypted(bytes(32), struct.pack("<I", 99), Command.REQUEST_DATA, b"\x0c\x00")
    async with RawLink(sim.address) as link:
        char, answer = await link.send(USDIO, frame)
    assert char == PAIRING_GDIO and _error(decode_plain(answer)) is ErrorCode.K_ERROR_NOT_AUTHORIZED


async def test_our_driver_and_pynukibt_are_both_authorized_on_one_lock(sim: NukiSimulator) -> None:
    secrets = MemorySecrets()
    paired = NukiDriver("front-lock", sim.address, secrets=secrets, timeout=5)
    await paired.connect()
    await paired.pair()
    sim.set_pairing(True)
    dev, _ = await pynuki_pair(sim.address)
    try:
        assert len(sim.lock.authorizations) == 2
        await dev.lock_action(dev._const.LockAction.UNLOCK, wait_for_completed=True)
        assert (await paired.refresh()).lock is GatewayLockState.UNLOCKED
        assert (await paired.execute(Action.LOCK)).lock is GatewayLockState.LOCKED
        await dev.update_state()
        assert str(dev.keyturner_state["lock_state"]) == "LOCKED"
    finally:
        await dev.disconnect()
        await paired.disconnect()


async def _advertisement(address: str) -> tuple[BLEDevice, object]:
    from bleak import BleakScanner

    from drivers.ble import scanner_backend_for

    backend = scanner_backend_for(address)
    assert backend is not None
    found = await BleakScanner.discover(timeout=1.0, return_adv=True, backend=backend)
    return found[address]


async def test_pynukibt_reads_our_beacon_and_polls_only_after_a_change(sim: NukiSimulator) -> None:
    dev, _ = await pynuki_pair(sim.address)
    try:
        await dev.update_state()
        assert dev.poll_needed() is False
        device, adv = await _advertisement(sim.address)
        dev.parse_advertisement_data(device, adv)
        assert dev.poll_needed() is False  # nothing changed since pyNukiBT read the state

        await sim.set_door(True)
        device, adv = await _advertisement(sim.address)
        dev.parse_advertisement_data(device, adv)
        assert dev.poll_needed() is True  # the beacon's state-changed bit
        await dev.update_state()
        assert str(dev.keyturner_state["door_sensor_state"]) == "DOOR_OPENED"
    finally:
        await dev.disconnect()


async def test_an_action_while_the_motor_turns_is_refused_busy() -> None:
    async with NukiSimulator(pairing=True, motor_ms=1500) as sim:
        ours = NukiDriver("front-lock", sim.address, secrets=MemorySecrets(), timeout=10)
        await ours.connect()
        await ours.pair()
        sim.set_pairing(True)
        dev, _ = await pynuki_pair(sim.address)
        try:
            await dev.update_state()
            moving = asyncio.create_task(ours.execute(Action.UNLOCK))
            async with asyncio.timeout(10):
                while not sim.lock.busy:  # noqa: ASYNC110 - the lock accepted our unlock
                    await asyncio.sleep(0.01)
            with pytest.raises(NukiErrorException) as err:
                await dev.lock_action(dev._const.LockAction.LOCK)
            assert int(err.value.error_code) == ErrorCode.K_ERROR_BUSY
            assert (await moving).lock is GatewayLockState.UNLOCKED
        finally:
            await dev.disconnect()
            await ours.disconnect()
