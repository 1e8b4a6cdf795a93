"""BlueZ GATT application objects for the BLE phone link (dbus-fast service interfaces).

dbus-fast reads D-Bus signatures from the annotations ("ay", "a{sv}"), so this module
does not use ``from __future__ import annotations`` and mypy skips it (pyproject).
Only :mod:`gateway.phone_ble` imports it, and only when an adapter exists.
"""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from dbus_fast import PropertyAccess, Variant
from dbus_fast.service import ServiceInterface, dbus_property, method

from gateway.phone_ble import PHONE_SERVICE_UUID, RX_CHAR_UUID, TX_CHAR_UUID, BleSessions

__all__ = ["register_phone_app"]


class _Service(ServiceInterface):
    def __init__(self) -> None:
        super().__init__("org.bluez.GattService1")

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> "s":
        return PHONE_SERVICE_UUID

    @dbus_property(access=PropertyAccess.READ)
    def Primary(self) -> "b":
        return True


class _Rx(ServiceInterface):
    def __init__(self, service_path: str, sessions: BleSessions) -> None:
        super().__init__("org.bluez.GattCharacteristic1")
        self._service = service_path
        self._sessions = sessions

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> "s":
        return RX_CHAR_UUID

    @dbus_property(access=PropertyAccess.READ)
    def Service(self) -> "o":
        return self._service

    @dbus_property(access=PropertyAccess.READ)
    def Flags(self) -> "as":
        return ["write", "write-without-response"]

    @method()
    async def WriteValue(self, value: "ay", options: "a{sv}"):
        device = options.get("device")
        peer = str(device.value) if isinstance(device, Variant) else "unknown"
        await self._sessions.on_write(peer, bytes(value))


class _Tx(ServiceInterface):
    def __init__(self, service_path: str) -> None:
        super().__init__("org.bluez.GattCharacteristic1")
        self._service = service_path
        self._value = b""
        self._notifying = False

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> "s":
        return TX_CHAR_UUID

    @dbus_property(access=PropertyAccess.READ)
    def Service(self) -> "o":
        return self._service

    @dbus_property(access=PropertyAccess.READ)
    def Flags(self) -> "as":
        return ["notify"]

    @dbus_property(access=PropertyAccess.READ)
    def Value(self) -> "ay":
        return self._value

    @dbus_property(access=PropertyAccess.READ)
    def Notifying(self) -> "b":
        return self._notifying

    @method()
    def StartNotify(self):
        self._notifying = True

    @method()
    def StopNotify(self):
        self._notifying = False

    async def notify(self, data: bytes) -> None:
        self._value = data
        self.emit_properties_changed({"Value": data})
        await asyncio.sleep(0)


class _Advertisement(ServiceInterface):
    def __init__(self) -> None:
        super().__init__("org.bluez.LEAdvertisement1")

    @dbus_property(access=PropertyAccess.READ)
    def Type(self) -> "s":
        return "peripheral"

    @dbus_property(access=PropertyAccess.READ)
    def ServiceUUIDs(self) -> "as":
        return [PHONE_SERVICE_UUID]

    @dbus_property(access=PropertyAccess.READ)
    def LocalName(self) -> "s":
        return "lockgw"

    @method()
    def Release(self):
        pass


async def register_phone_app(
    bus: Any, adapter_path: str, intro: Any, app_path: str, sessions: BleSessions
) -> Callable[[bytes], Awaitable[None]]:
    service_path = f"{app_path}/service0"
    tx = _Tx(service_path)
    bus.export(service_path, _Service())
    bus.export(f"{service_path}/char0", _Rx(service_path, sessions))
    bus.export(f"{service_path}/char1", tx)
    bus.export(f"{app_path}/adv0", _Advertisement())
    adapter = bus.get_proxy_object("org.bluez", adapter_path, intro)
    await adapter.get_interface("org.bluez.GattManager1").call_register_application(app_path, {})
    await adapter.get_interface("org.bluez.LEAdvertisingManager1").call_register_advertisement(
        f"{app_path}/adv0", {}
    )
    return tx.notify
