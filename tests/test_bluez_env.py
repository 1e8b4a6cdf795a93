"""The BlueZ test bed itself: BlueZoo on a private bus behaves as BlueZ does for bleak.

A GATT application and an advertisement registered through ``GattManager1`` /
``LEAdvertisingManager1`` on one adapter are found by bleak's BlueZ backend scanning on
another, connected, read and written; an adapter taken away leaves the bus and comes
back with its address.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError
from bluez_env import BluezEnv
from dbus_fast import BusType, PropertyAccess
from dbus_fast.aio import MessageBus
from dbus_fast.service import ServiceInterface, dbus_property, method

SERVICE = "6c6f636b-0000-4000-8000-000000000001"
CHAR = "6c6f636b-0000-4000-8000-000000000002"


class _Service(ServiceInterface):
    def __init__(self) -> None:
        super().__init__("org.bluez.GattService1")

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> "s":
        return SERVICE

    @dbus_property(access=PropertyAccess.READ)
    def Primary(self) -> "b":
        return True


class _Char(ServiceInterface):
    def __init__(self) -> None:
        super().__init__("org.bluez.GattCharacteristic1")
        self.value = b"hello"
        self.writers: list[str] = []

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> "s":
        return CHAR

    @dbus_property(access=PropertyAccess.READ)
    def Service(self) -> "o":
        return "/smoke/service0"

    @dbus_property(access=PropertyAccess.READ)
    def Flags(self) -> "as":
        return ["read", "write"]

    @method()
    def ReadValue(self, options: "a{sv}") -> "ay":
        return self.value

    @method()
    def WriteValue(self, value: "ay", options: "a{sv}"):
        self.value = bytes(value)
        self.writers.append(str(options["device"].value))


class _Advertisement(ServiceInterface):
    def __init__(self) -> None:
        super().__init__("org.bluez.LEAdvertisement1")

    @dbus_property(access=PropertyAccess.READ)
    def Type(self) -> "s":
        return "peripheral"

    @dbus_property(access=PropertyAccess.READ)
    def ServiceUUIDs(self) -> "as":
        return [SERVICE]

    @dbus_property(access=PropertyAccess.READ)
    def LocalName(self) -> "s":
        return "smoke"

    @dbus_property(access=PropertyAccess.READ)
    def Discoverable(self) -> "b":
        return True

    @method()
    def Release(self):
        pass


@pytest.fixture
async def peripheral(bluez_here: BluezEnv) -> AsyncIterator[_Char]:
    """A GATT application and advertisement on hci1, on a D-Bus connection of its own."""
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    char = _Char()
    bus.export("/smoke/service0", _Service())
    bus.export("/smoke/service0/char0", char)
    bus.export("/smoke/adv0", _Advertisement())
    intro = await bus.introspect("org.bluez", "/org/bluez/hci1")
    adapter = bus.get_proxy_object("org.bluez", "/org/bluez/hci1", intro)
    await adapter.get_interface("org.bluez.GattManager1").call_register_application("/smoke", {})
    adv = adapter.get_interface("org.bluez.LEAdvertisingManager1")
    await adv.call_register_advertisement("/smoke/adv0", {})
    try:
        yield char
    finally:
        bus.disconnect()  # BlueZ drops an application whose owner leaves the bus
        with contextlib.suppress(Exception):
            await bus.wait_for_disconnect()


async def test_advertisement_on_one_adapter_is_found_connected_read_and_written_from_another(
    bluez_here: BluezEnv, peripheral: _Char
) -> None:
    address = bluez_here.adapter("hci1").address
    seen: asyncio.Queue[BLEDevice] = asyncio.Queue()

    def on_advertisement(device: BLEDevice, adv: AdvertisementData) -> None:
        if device.address == address and SERVICE in adv.service_uuids:
            seen.put_nowait(device)

    # the callback is in place before the scan starts: BlueZoo announces a device once per
    # adapter (real BlueZ repeats it with every advertisement's RSSI), so a scanner that
    # starts listening after discovery began (find_device_by_address) can miss it
    async with BleakScanner(on_advertisement, bluez={"adapter": "hci0"}):
        async with asyncio.timeout(10):
            device = await seen.get()
    assert device.name == "smoke"
    async with BleakClient(device, timeout=10) as client:
        assert client.services.get_service(SERVICE) is not None
        assert await client.read_gatt_char(CHAR) == b"hello"
        await client.write_gatt_char(CHAR, b"written", response=True)
        assert await client.read_gatt_char(CHAR) == b"written"
    # the peripheral saw the write come from the central's adapter, as BlueZ tells it
    central = bluez_here.adapter("hci0").address.replace(":", "_")
    assert peripheral.writers == [f"/org/bluez/hci1/dev_{central}"]


async def test_a_removed_adapter_leaves_the_bus_and_comes_back_with_its_address(
    bluez_here: BluezEnv,
) -> None:
    await bluez_here.remove_adapter("hci3")
    with pytest.raises(BleakError):
        async with BleakScanner(bluez={"adapter": "hci3"}):
            await asyncio.sleep(0)
    await bluez_here.add_adapter("hci3")
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    try:
        intro = await bus.introspect("org.bluez", "/org/bluez/hci3")
        proxy = bus.get_proxy_object("org.bluez", "/org/bluez/hci3", intro)
        props = proxy.get_interface("org.bluez.Adapter1")
        assert await props.get_address() == bluez_here.adapter("hci3").address
        assert await props.get_powered() is True
    finally:
        bus.disconnect()
        with contextlib.suppress(Exception):
            await bus.wait_for_disconnect()
