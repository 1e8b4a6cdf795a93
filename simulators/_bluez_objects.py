"""The D-Bus objects of a simulator's BlueZ peripheral (dbus-fast service interfaces).

dbus-fast reads D-Bus signatures from the annotations ("ay", "a{sv}"), so this module
does not use ``from __future__ import annotations`` and mypy skips it (pyproject); the
logic they call is :class:`simulators.bluez_peripheral.BluezPeripheral`, checked as usual.
"""

from typing import Any

from dbus_fast import PropertyAccess, Variant
from dbus_fast.service import ServiceInterface, dbus_property, method

from protocols import gattlink as gl
from simulators.gatt_server import Characteristic, GattServer

__all__ = ["Advertisement", "CharacteristicObject", "DescriptorObject", "ServiceObject"]

_FLAGS = (
    (gl.Property.READ, "read"),
    (gl.Property.WRITE, "write"),
    (gl.Property.WRITE_WITHOUT_RESPONSE, "write-without-response"),
    (gl.Property.NOTIFY, "notify"),
    (gl.Property.INDICATE, "indicate"),
)


class ServiceObject(ServiceInterface):
    def __init__(self, uuid: str) -> None:
        super().__init__("org.bluez.GattService1")
        self._uuid = uuid

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> "s":
        return self._uuid

    @dbus_property(access=PropertyAccess.READ)
    def Primary(self) -> "b":
        return True


class CharacteristicObject(ServiceInterface):
    def __init__(self, peripheral: Any, char: Characteristic, service: str) -> None:
        super().__init__("org.bluez.GattCharacteristic1")
        self._peripheral = peripheral
        self.char = char
        self._service = service
        self.value = char.value
        self.notifying = False

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> "s":
        return self.char.uuid

    @dbus_property(access=PropertyAccess.READ)
    def Service(self) -> "o":
        return self._service

    @dbus_property(access=PropertyAccess.READ)
    def Flags(self) -> "as":
        return [name for flag, name in _FLAGS if self.char.properties & flag]

    @dbus_property(access=PropertyAccess.READ)
    def Value(self) -> "ay":
        return self.value

    @dbus_property(access=PropertyAccess.READ)
    def Notifying(self) -> "b":
        return self.notifying

    @method()
    async def ReadValue(self, options: "a{sv}") -> "ay":
        return await self._peripheral.read(self.char, options)

    @method()
    async def WriteValue(self, value: "ay", options: "a{sv}"):
        await self._peripheral.write(self.char, bytes(value), options)

    @method()
    async def StartNotify(self):
        await self._peripheral.subscribe(self, True)

    @method()
    async def StopNotify(self):
        await self._peripheral.subscribe(self, False)

    @method()
    def Confirm(self):
        pass  # an indication arrived: nothing to do


class DescriptorObject(ServiceInterface):
    def __init__(self, uuid: str, value: bytes, characteristic: str) -> None:
        super().__init__("org.bluez.GattDescriptor1")
        self._uuid = uuid
        self._value = value
        self._characteristic = characteristic

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> "s":
        return self._uuid

    @dbus_property(access=PropertyAccess.READ)
    def Characteristic(self) -> "o":
        return self._characteristic

    @dbus_property(access=PropertyAccess.READ)
    def Flags(self) -> "as":
        return ["read"]

    @method()
    def ReadValue(self, options: "a{sv}") -> "ay":
        offset = options.get("offset")
        start = int(offset.value) if isinstance(offset, Variant) else 0
        return self._value[start:]


class Advertisement(ServiceInterface):
    def __init__(self, server: GattServer) -> None:
        super().__init__("org.bluez.LEAdvertisement1")
        self._server = server

    @dbus_property(access=PropertyAccess.READ)
    def Type(self) -> "s":
        return "peripheral"

    @dbus_property(access=PropertyAccess.READ)
    def LocalName(self) -> "s":
        return self._server.name

    @dbus_property(access=PropertyAccess.READ)
    def ServiceUUIDs(self) -> "as":
        return list(self._server.advertised_uuids)

    @dbus_property(access=PropertyAccess.READ)
    def ManufacturerData(self) -> "a{qv}":
        return {k: Variant("ay", v) for k, v in self._server.manufacturer_data.items()}

    @dbus_property(access=PropertyAccess.READ)
    def Discoverable(self) -> "b":
        return True

    @method()
    def Release(self):
        pass

    def changed(self) -> None:
        self.emit_properties_changed({
            "ManufacturerData": {
                k: Variant("ay", v) for k, v in self._server.manufacturer_data.items()
            }
        })
