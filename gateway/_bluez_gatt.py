"""BlueZ GATT application objects for the BLE phone link (dbus-fast service interfaces).

dbus-fast reads D-Bus signatures from the annotations ("ay", "a{sv}"), so this module
does not use ``from __future__ import annotations`` and mypy skips it (pyproject).
Only :mod:`gateway.phone_ble` imports it, and only when ``[phone_link] ble = true``.
The logic the objects call is :class:`gateway.phone_ble.BleSessions`, checked as usual.

* service ``PHONE_SERVICE_UUID`` (primary, advertised)
* ``RX`` (write, write-without-response): ``WriteValue`` → ``BleSessions.on_write`` with
  the ``device`` and ``mtu`` options BlueZ passes
* ``TX`` (read): ``ReadValue`` → ``BleSessions.on_read`` for the ``device`` that reads
"""

from typing import Any

from dbus_fast import PropertyAccess, Variant
from dbus_fast.errors import DBusError
from dbus_fast.service import ServiceInterface, dbus_property, method

from gateway.phone_ble import BleSessions, PhoneBleBusy
from protocols.phone import PHONE_SERVICE_UUID, RX_CHAR_UUID, TX_CHAR_UUID

__all__ = ["ADVERTISED_NAME", "PhoneApp"]

#: the advertisement's local name
ADVERTISED_NAME = "lockgw"


def _option(options: dict, name: str) -> Any:
    value = options.get(name)
    return value.value if isinstance(value, Variant) else None


def _central(options: dict) -> str:
    device = _option(options, "device")
    if not isinstance(device, str) or not device:
        # BlueZ names the central in every call it passes (5.4x and later); without it
        # one phone's chunks could not be told from another's
        raise DBusError("org.bluez.Error.NotSupported", "no device option: BlueZ too old")
    return device


def _mtu(options: dict) -> "int | None":
    mtu = _option(options, "mtu")
    return int(mtu) if isinstance(mtu, int) and mtu >= 23 else None


class _Service(ServiceInterface):
    def __init__(self) -> None:
        super().__init__("org.bluez.GattService1")

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> "s":
        return PHONE_SERVICE_UUID

    @dbus_property(access=PropertyAccess.READ)
    def Primary(self) -> "b":
        return True


class _Characteristic(ServiceInterface):
    UUID_VALUE = ""
    FLAGS: "tuple[str, ...]" = ()

    def __init__(self, service_path: str, sessions: BleSessions) -> None:
        super().__init__("org.bluez.GattCharacteristic1")
        self._service = service_path
        self._sessions = sessions

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> "s":
        return self.UUID_VALUE

    @dbus_property(access=PropertyAccess.READ)
    def Service(self) -> "o":
        return self._service

    @dbus_property(access=PropertyAccess.READ)
    def Flags(self) -> "as":
        return list(self.FLAGS)


class _Rx(_Characteristic):
    UUID_VALUE = RX_CHAR_UUID
    FLAGS = ("write", "write-without-response")

    @method()
    def WriteValue(self, value: "ay", options: "a{sv}"):
        try:
            self._sessions.on_write(_central(options), bytes(value), _mtu(options))
        except PhoneBleBusy as exc:
            raise DBusError("org.bluez.Error.Failed", str(exc)) from exc


class _Tx(_Characteristic):
    UUID_VALUE = TX_CHAR_UUID
    FLAGS = ("read",)

    @method()
    async def ReadValue(self, options: "a{sv}") -> "ay":
        offset = _option(options, "offset")
        return await self._sessions.on_read(
            _central(options), _mtu(options), int(offset) if isinstance(offset, int) else 0
        )


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
        return ADVERTISED_NAME

    @dbus_property(access=PropertyAccess.READ)
    def Discoverable(self) -> "b":
        # general discoverable: phones find the hub whether or not the adapter itself
        # is discoverable (BlueZ ≥ 5.50 honours this property)
        return True

    @method()
    def Release(self):
        pass


class PhoneApp:
    """The objects of the phone peripheral under ``app_path``."""

    def __init__(self, app_path: str, sessions: BleSessions) -> None:
        self.app_path = app_path
        self.service_path = f"{app_path}/service0"
        self.adv_path = f"{app_path}/adv0"
        self._objects = {
            self.service_path: _Service(),
            f"{self.service_path}/char0": _Rx(self.service_path, sessions),
            f"{self.service_path}/char1": _Tx(self.service_path, sessions),
            self.adv_path: _Advertisement(),
        }

    def export(self, bus: Any) -> None:
        for path, obj in self._objects.items():
            bus.export(path, obj)
