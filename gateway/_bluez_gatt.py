"""BlueZ GATT application objects for the BLE phone link (dbus-fast service interfaces).

dbus-fast reads D-Bus signatures from the annotations ("ay", "a{sv}"), so this module
does not use ``from __future__ import annotations`` and mypy skips it (pyproject).
Only :mod:`gateway.phone_ble` imports it, and only when ``[phone_link] ble = true``.
The logic the objects call is :class:`gateway.phone_ble.BleSessions`, checked as usual.

* the site's service (primary; UUIDs :func:`protocols.advert.site_uuids`, issue 17's quiet
  advertisement) — and, only while ``[phone_link] accept_v1`` lets old phones in, the
  legacy service (``protocols.advert.LEGACY_UUIDS``) too
* ``RX`` (write, write-without-response): ``WriteValue`` → ``BleSessions.on_write`` with
  the ``device`` and ``mtu`` options BlueZ passes
* ``TX`` (read): ``ReadValue`` → ``BleSessions.on_read`` for the ``device`` that reads
* the advertisement: no name, no manufacturer data, one service UUID that changes every
  15 minutes (:func:`protocols.advert.advert_uuid`); with legacy on, also the name
  ``lockgw`` (what v1 phones look for)
"""

import time
from collections.abc import Callable
from typing import Any

from dbus_fast import PropertyAccess, Variant
from dbus_fast.errors import DBusError
from dbus_fast.service import ServiceInterface, dbus_property, method

from gateway.phone_ble import BleSessions, PhoneBleBusy
from protocols.advert import LEGACY_NAME, LEGACY_UUIDS, advert_epoch, advert_uuid, site_uuids

__all__ = ["PhoneApp"]


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
    def __init__(self, uuid: str) -> None:
        super().__init__("org.bluez.GattService1")
        self._uuid = uuid

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> "s":
        return self._uuid

    @dbus_property(access=PropertyAccess.READ)
    def Primary(self) -> "b":
        return True


class _Characteristic(ServiceInterface):
    FLAGS: "tuple[str, ...]" = ()

    def __init__(self, uuid: str, service_path: str, sessions: BleSessions) -> None:
        super().__init__("org.bluez.GattCharacteristic1")
        self._uuid = uuid
        self._service = service_path
        self._sessions = sessions

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> "s":
        return self._uuid

    @dbus_property(access=PropertyAccess.READ)
    def Service(self) -> "o":
        return self._service

    @dbus_property(access=PropertyAccess.READ)
    def Flags(self) -> "as":
        return list(self.FLAGS)


class _Rx(_Characteristic):
    FLAGS = ("write", "write-without-response")

    @method()
    def WriteValue(self, value: "ay", options: "a{sv}"):
        try:
            self._sessions.on_write(_central(options), bytes(value), _mtu(options))
        except PhoneBleBusy as exc:
            raise DBusError("org.bluez.Error.Failed", str(exc)) from exc


class _Tx(_Characteristic):
    FLAGS = ("read",)

    @method()
    async def ReadValue(self, options: "a{sv}") -> "ay":
        offset = _option(options, "offset")
        return await self._sessions.on_read(
            _central(options), _mtu(options), int(offset) if isinstance(offset, int) else 0
        )


class _Advertisement(ServiceInterface):
    """The quiet advertisement: the service UUID of the current 15-minute epoch, nothing
    else a passer-by could read (BlueZ adds the flags)."""

    def __init__(self, uuids: "Callable[[], list[str]]") -> None:
        super().__init__("org.bluez.LEAdvertisement1")
        self._uuids = uuids

    @dbus_property(access=PropertyAccess.READ)
    def Type(self) -> "s":
        return "peripheral"

    @dbus_property(access=PropertyAccess.READ)
    def ServiceUUIDs(self) -> "as":
        return self._uuids()

    @dbus_property(access=PropertyAccess.READ)
    def Discoverable(self) -> "b":
        # general discoverable: phones find the hub whether or not the adapter itself
        # is discoverable (BlueZ ≥ 5.50 honours this property)
        return True

    @method()
    def Release(self):
        pass


class _LegacyAdvertisement(_Advertisement):
    """What v1 phones look for, while ``[phone_link] accept_v1`` lets them in: the name."""

    @dbus_property(access=PropertyAccess.READ)
    def LocalName(self) -> "s":
        return LEGACY_NAME


class PhoneApp:
    """The objects of the phone peripheral under ``app_path``: the site's service (from
    its advertising key) and, with ``legacy``, the v1 service beside it."""

    def __init__(
        self,
        app_path: str,
        sessions: BleSessions,
        advert_key: bytes,
        *,
        legacy: bool = False,
    ) -> None:
        self.app_path = app_path
        self.adv_path = f"{app_path}/adv0"
        self.uuids = site_uuids(advert_key)
        self.legacy = legacy
        self._key = advert_key
        self._objects: dict[str, ServiceInterface] = {}
        services = [self.uuids, LEGACY_UUIDS] if legacy else [self.uuids]
        for n, uuids in enumerate(services):
            path = f"{app_path}/service{n}"
            self._objects[path] = _Service(uuids.service)
            self._objects[f"{path}/char0"] = _Rx(uuids.rx, path, sessions)
            self._objects[f"{path}/char1"] = _Tx(uuids.tx, path, sessions)
        adv = _LegacyAdvertisement if legacy else _Advertisement
        self._objects[self.adv_path] = adv(self.advertised)

    def epoch(self) -> int:
        return advert_epoch(time.time())

    def advertised(self) -> "list[str]":
        """The service UUID the advertisement carries now (one: a legacy advertisement
        holds 31 bytes, and the flags, one 128-bit UUID and the legacy name fill 29)."""
        return [advert_uuid(self._key, self.epoch())]

    def export(self, bus: Any) -> None:
        for path, obj in self._objects.items():
            bus.export(path, obj)

    def unexport(self, bus: Any) -> None:
        for path in self._objects:
            bus.unexport(path)
