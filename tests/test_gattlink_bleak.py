"""The loopback bleak backend against the simulator GATT server, through the real bleak API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from bleak import BleakClient
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.exc import (
    BleakCharacteristicNotFoundError,
    BleakDeviceNotFoundError,
    BleakError,
    BleakGATTProtocolError,
    BleakGATTProtocolErrorCode,
)

from drivers.ble import client_backend_for, find_device, is_loopback, make_client
from drivers.loopback import LoopbackClientBackend
from protocols.gattlink import AttError, normalize_uuid
from simulators.gatt_server import Connection, GattError, GattServer

BATTERY_SVC = normalize_uuid(0x180F)
BATTERY_LEVEL = normalize_uuid(0x2A19)
CMD_SVC = "8e5c1001-6c6f-636b-6777-000000000001"
CMD = "8e5c1002-6c6f-636b-6777-000000000001"
EVT = "8e5c1003-6c6f-636b-6777-000000000001"
SERIAL = normalize_uuid(0x2A25)


@dataclass
class Device:
    """A tiny simulated device: battery, a command characteristic echoing to an event one."""

    server: GattServer
    writes: list[tuple[int, bytes]] = field(default_factory=list)
    disconnects: list[int] = field(default_factory=list)

    @property
    def address(self) -> str:
        return self.server.address


def build_device(**kw: object) -> Device:
    server = GattServer("test-lock", **kw)  # type: ignore[arg-type]
    dev = Device(server)
    battery = server.add_service(BATTERY_SVC)
    battery.add_characteristic(BATTERY_LEVEL, value=b"\x64", notify=True)
    svc = server.add_service(CMD_SVC)
    evt = svc.add_characteristic(EVT, notify=True)

    async def on_cmd(conn: Connection, data: bytes) -> None:
        if data == b"refuse":
            raise GattError(AttError.VALUE_NOT_ALLOWED, "refused on purpose")
        if data == b"crash":
            raise RuntimeError("simulator bug")
        dev.writes.append((conn.id, data))
        await server.notify(evt, b"ack:" + data[:20], connection=conn)

    svc.add_characteristic(CMD, write=on_cmd, write_without_response=True)
    svc.add_characteristic(SERIAL, read=lambda conn: f"SN-{conn.id:04d}".encode())
    server.on_disconnect = lambda conn: dev.disconnects.append(conn.id)
    return dev


@pytest.fixture
async def device() -> AsyncIterator[Device]:
    dev = build_device()
    async with dev.server:
        yield dev


async def test_address_selects_the_loopback_backend_and_nothing_else() -> None:
    assert client_backend_for("loopback://127.0.0.1:1") is LoopbackClientBackend
    assert client_backend_for("AA:BB:CC:DD:EE:FF") is None
    assert is_loopback("loopback://127.0.0.1:5") and not is_loopback("AA:BB:CC:DD:EE:FF")
    client = make_client("loopback://127.0.0.1:1")
    assert client.backend_id == "LoopbackClientBackend"


async def test_services_are_bleaks_own_collection(device: Device) -> None:
    async with make_client(device.address) as client:
        assert client.name == "test-lock"
        assert client.mtu_size == 247
        services = client.services
        assert {s.uuid for s in services} == {BATTERY_SVC, CMD_SVC}
        level = services.get_characteristic(BATTERY_LEVEL)
        assert level is not None and isinstance(level, BleakGATTCharacteristic)
        assert level.properties == ["read", "notify"]
        assert level.service_uuid == BATTERY_SVC
        assert [d.uuid for d in level.descriptors] == [normalize_uuid(0x2902)]
        cmd = services.get_characteristic(CMD)
        assert cmd is not None and set(cmd.properties) == {"write", "write-without-response"}
        assert cmd.max_write_without_response_size == 244


async def test_services_filter_is_honoured(device: Device) -> None:
    async with make_client(device.address, services=[BATTERY_SVC]) as client:
        assert [s.uuid for s in client.services] == [BATTERY_SVC]


async def test_read_by_uuid_handle_and_object(device: Device) -> None:
    async with make_client(device.address) as client:
        assert await client.read_gatt_char(BATTERY_LEVEL) == bytearray(b"\x64")
        char = client.services.get_characteristic(BATTERY_LEVEL)
        assert char is not None
        assert await client.read_gatt_char(char.handle) == b"\x64"
        device.server.characteristic(BATTERY_LEVEL).value = b"\x15"
        assert await client.read_gatt_char(char) == b"\x15"
        assert await client.read_gatt_char(char, use_cached=True) == b"\x15"
        assert (await client.read_gatt_char(SERIAL)).startswith(b"SN-")


async def test_write_with_response_reaches_the_handler_and_notifies(device: Device) -> None:
    async with make_client(device.address) as client:
        got: asyncio.Queue[tuple[str, bytearray]] = asyncio.Queue()
        await client.start_notify(EVT, lambda ch, data: got.put_nowait((ch.uuid, data)))
        await client.write_gatt_char(CMD, b"unlock", response=True)
        assert await asyncio.wait_for(got.get(), 5) == (EVT, bytearray(b"ack:unlock"))
        assert [w for _, w in device.writes] == [b"unlock"]


async def test_write_without_response_and_async_callback(device: Device) -> None:
    async with make_client(device.address) as client:
        got: asyncio.Queue[bytearray] = asyncio.Queue()

        async def on_event(ch: BleakGATTCharacteristic, data: bytearray) -> None:
            await got.put(data)

        await client.start_notify(EVT, on_event)
        await client.write_gatt_char(CMD, b"lock", response=False)
        assert await asyncio.wait_for(got.get(), 5) == b"ack:lock"


async def test_stop_notify_stops_notifications(device: Device) -> None:
    async with make_client(device.address) as client:
        got: list[bytearray] = []
        await client.start_notify(EVT, lambda _c, d: got.append(d))
        await client.write_gatt_char(CMD, b"one", response=True)
        await client.stop_notify(EVT)
        evt = device.server.characteristic(EVT)
        assert await device.server.notify(evt, b"nobody listens") == 0
        await client.write_gatt_char(CMD, b"two", response=True)
        # a read is answered after any notification queued before it: ordering is kept
        await client.read_gatt_char(BATTERY_LEVEL)
        assert got == [bytearray(b"ack:one")]


async def test_notify_reaches_every_subscribed_connection(device: Device) -> None:
    clients = [make_client(device.address) for _ in range(3)]
    queues: list[asyncio.Queue[bytearray]] = [asyncio.Queue() for _ in clients]
    for c, q in zip(clients, queues, strict=True):
        await c.connect()
        await c.start_notify(BATTERY_LEVEL, lambda _ch, d, q=q: q.put_nowait(d))
    lonely = make_client(device.address)
    await lonely.connect()
    try:
        level = device.server.characteristic(BATTERY_LEVEL)
        assert await device.server.notify(level, b"\x0a") == 3
        for q in queues:
            assert await asyncio.wait_for(q.get(), 5) == b"\x0a"
    finally:
        for c in [*clients, lonely]:
            await c.disconnect()


async def test_att_errors_are_bleak_protocol_errors(device: Device) -> None:
    async with make_client(device.address) as client:
        with pytest.raises(BleakGATTProtocolError) as exc:
            await client.write_gatt_char(CMD, b"refuse", response=True)
        assert exc.value.code == BleakGATTProtocolErrorCode.VALUE_NOT_ALLOWED
        with pytest.raises(BleakGATTProtocolError) as exc:
            await client.write_gatt_char(CMD, b"crash", response=True)
        assert exc.value.code == BleakGATTProtocolErrorCode.UNLIKELY_ERROR
        with pytest.raises(BleakGATTProtocolError) as exc:
            await client.read_gatt_char(CMD)
        assert exc.value.code == BleakGATTProtocolErrorCode.READ_NOT_PERMITTED
        with pytest.raises(BleakGATTProtocolError) as exc:
            await client.write_gatt_char(BATTERY_LEVEL, b"\x01", response=True)
        assert exc.value.code == BleakGATTProtocolErrorCode.WRITE_NOT_PERMITTED
        with pytest.raises(BleakGATTProtocolError) as exc:
            await client.start_notify(SERIAL, lambda _c, _d: None)
        assert exc.value.code == BleakGATTProtocolErrorCode.REQUEST_NOT_SUPPORTED
        with pytest.raises(BleakError, match="write without response"):
            await client.write_gatt_char(BATTERY_LEVEL, b"\x01", response=False)
        # the link survives every one of these
        assert client.is_connected
        assert await client.read_gatt_char(BATTERY_LEVEL) == b"\x64"


async def test_unknown_characteristic_is_bleaks_not_found_error(device: Device) -> None:
    async with make_client(device.address) as client:
        with pytest.raises(BleakCharacteristicNotFoundError):
            await client.read_gatt_char(normalize_uuid(0x2A00))
        with pytest.raises(BleakCharacteristicNotFoundError):
            await client.write_gatt_char(9999, b"x", response=True)


async def test_descriptors_read_the_subscription_state(device: Device) -> None:
    async with make_client(device.address) as client:
        level = client.services.get_characteristic(BATTERY_LEVEL)
        assert level is not None
        cccd = level.descriptors[0]
        assert await client.read_gatt_descriptor(cccd.handle) == b"\x00\x00"
        await client.start_notify(level, lambda _c, _d: None)
        assert await client.read_gatt_descriptor(cccd) == b"\x01\x00"


async def test_nobody_listening_is_device_not_found() -> None:
    dev = build_device()
    await dev.server.start()
    address = dev.server.address
    await dev.server.close()
    client = make_client(address)
    with pytest.raises(BleakDeviceNotFoundError):
        await client.connect()
    assert not client.is_connected


async def test_operations_when_not_connected_raise_bleak_error(device: Device) -> None:
    client = make_client(device.address)
    with pytest.raises(BleakError):
        await client.read_gatt_char(BATTERY_LEVEL)
    with pytest.raises(BleakError):
        await client.start_notify(BATTERY_LEVEL, lambda _c, _d: None)
    await client.disconnect()  # a no-op, as bleak's


async def test_disconnect_fires_the_callback_once_and_server_sees_it(device: Device) -> None:
    lost: list[BleakClient] = []
    client = make_client(device.address, disconnected_callback=lost.append)
    await client.connect()
    await client.disconnect()
    await client.disconnect()
    assert lost == [client]
    assert not client.is_connected
    for _ in range(100):
        if device.disconnects:
            break
        await asyncio.sleep(0.01)
    assert len(device.disconnects) == 1
    # and it connects again
    await client.connect()
    assert await client.read_gatt_char(BATTERY_LEVEL) == b"\x64"
    await client.disconnect()
    assert len(lost) == 2


async def test_server_shutdown_disconnects_clients_cleanly() -> None:
    dev = build_device()
    await dev.server.start()
    lost = asyncio.Event()
    client = make_client(dev.address, disconnected_callback=lambda _c: lost.set())
    await client.connect()
    await dev.server.close()
    await asyncio.wait_for(lost.wait(), 5)
    assert not client.is_connected


async def test_find_device_sees_the_simulator_and_its_advertisement(device: Device) -> None:
    device.server.manufacturer_data[0x004C] = b"\x02\x15" + bytes(21)
    found = await find_device(device.address, timeout=5)
    assert found is not None and found.address == device.address and found.name == "test-lock"
    async with make_client(found) as client:
        assert await client.read_gatt_char(BATTERY_LEVEL) == b"\x64"


async def test_find_device_returns_none_when_nothing_answers() -> None:
    dev = build_device()
    await dev.server.start()
    address = dev.server.address
    await dev.server.close()
    assert await find_device(address, timeout=0.5) is None


async def test_scanner_reports_advertisement_changes_and_filters_by_service(device: Device) -> None:
    from bleak import BleakScanner

    from drivers.loopback import LoopbackScannerBackend

    device.server.advertised_uuids = (CMD_SVC,)
    seen: asyncio.Queue[tuple[str, dict[int, bytes], list[str]]] = asyncio.Queue()
    backend = LoopbackScannerBackend.targeting([device.address])
    scanner = BleakScanner(
        lambda d, ad: seen.put_nowait((d.address, ad.manufacturer_data, ad.service_uuids)),
        service_uuids=[CMD_SVC],
        backend=backend,
    )
    async with scanner:
        address, mfr, uuids = await asyncio.wait_for(seen.get(), 5)
        assert address == device.address and mfr == {} and uuids == [CMD_SVC]
        device.server.manufacturer_data[0x01DA] = b"\x01state"  # e.g. a lock signalling a change
        while mfr != {0x01DA: b"\x01state"}:
            _, mfr, _ = await asyncio.wait_for(seen.get(), 5)
    filtered = BleakScanner(service_uuids=[BATTERY_SVC], backend=backend)
    async with filtered:
        await asyncio.sleep(0.5)
    assert filtered.discovered_devices == []
