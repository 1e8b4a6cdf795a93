# SPDX-License-Identifier: GPL-2.0-only
# This one test tool runs inside BlueZoo's process and changes its behaviour, so it is
# licensed like BlueZoo (GPL-2.0-only), unlike the rest of lockgw (Apache-2.0). It is a
# separate program: lockgw's tests speak to it over D-Bus only, and it is never packaged.
"""Run BlueZoo 1.0.2 (the tests' BlueZ mock) with four corrections towards BlueZ.

``python tests/bluezoo_launcher.py ARGS`` is ``bluezoo ARGS`` with these behaviours of
BlueZoo 1.0.2 brought in line with bluetoothd, so that a central can connect to the same
peripheral more than once — which supervisors, on-demand connections and every
reconnection test need:

1. **A connection resolves the peripheral's table afresh, and a device's objects go with
   it.** BlueZoo exports a connection's GATT objects under the central's device path and
   never removes them: a second connection to the same peripheral, or one after the
   device was removed (``RemoveDevice``, an adapter taken away), fails
   (``sd_bus_add_object_vtable``: errno 17). Here the objects of the earlier connection go
   (``InterfacesRemoved``) before the new ones are exported, as bluetoothd replaces a
   device's attribute objects when it resolves services again, and they go with the
   device when it is removed.
2. **Both ends hear a disconnect.** BlueZoo pairs a device with a fresh, unexported twin
   of the central on each discovery, so a second connection of the same central, and a
   disconnect asked for by the peripheral (``Device1.Disconnect`` on its side), reached
   only one end. Here the central's object on the peripheral's adapter is the exported
   one, and each side's object knows the other.
3. **Notifications stop with the link.** bluetoothd calls ``StopNotify`` on the GATT
   application when the last subscribed central disconnects; BlueZoo kept forwarding
   values to the old connection and told the next one the characteristic was notifying.
4. **A peripheral whose adapter was replaced is reached on the adapter there now.** A
   central that saw a peripheral before the peripheral's adapter was taken away and given
   back (``RemoveAdapter`` / ``AddAdapter``) kept connecting to the removed adapter
   object (its GATT applications gone, its twin of the central no longer exportable:
   "Object already exported"). Here the connection goes to the current adapter with the
   same index, with a fresh twin, as bluetoothd simply connects to the address.

This file is the only one in lockgw that imports BlueZoo (GPL-2.0-only). It is a test
tool, run as a process of its own by ``tests/bluez_env.py``, never packaged or imported
by lockgw's code; it changes BlueZoo's behaviour at run time and contains none of its
code. The corrections are wrappers around BlueZoo's own methods, for the pinned version.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

from bluezoo import bluezoo as _main_module
from bluezoo import events
from bluezoo.adapter import Adapter
from bluezoo.device import Device

_connect = Device.connect
_disconnect = Device.disconnect
_del_device = Adapter.del_device


def _drop_links(device: Any) -> None:
    for link in list(device.services.values()):
        with contextlib.suppress(Exception):
            device.peer_adapter.mock.remove_object(link)
    device.services.clear()


def _twin_path(device: Any) -> str:
    """Where the central appears on the peripheral's adapter."""
    return f"{device.peer_adapter.get_object_path()}/dev_{device.adapter.address.replace(':', '_')}"


async def _connect_fixed(self: Any, uuid: str | None = None) -> None:
    current = self.adapter.mock.adapters.get(self.peer_adapter.id) if self.adapter else None
    if current is not None and current is not self.peer_adapter:  # 4: replaced adapter
        self.peer_adapter = current
        self.peer = Device(self.adapter, is_le=self.is_le)
    twin = self.peer_adapter.devices.get(_twin_path(self))
    if twin is not None:
        self.peer = twin  # 2: the exported object, so the peripheral hears this connection
    _drop_links(self)  # 1: the earlier connection's objects go
    await _connect(self, uuid)
    self.peer.peer = self  # 2: a disconnect from the peripheral's side reaches the central


async def _disconnect_fixed(self: Any, uuid: str | None = None) -> None:
    await _disconnect(self, uuid)
    central = self if self.services else self.peer
    for link in list(getattr(central, "services", {}).values()):  # 3
        sub = getattr(link, "client_props_changed_subscription", None)
        # a link that never started notifications keeps BlueZoo's empty Subscription
        if sub is None or (isinstance(sub, events.Subscription) and sub.subscriber is None):
            continue
        sub.unsubscribe()
        link.client_props_changed_subscription = events.Subscription()
        with contextlib.suppress(Exception):
            await link.client.StopNotify()


async def _del_device_fixed(self: Any, device: Any) -> None:
    await _del_device(self, device)
    _drop_links(device)  # 1: a removed device's objects go with it


Adapter.del_device = _del_device_fixed  # type: ignore[method-assign]
Device.connect = _connect_fixed  # type: ignore[method-assign]
Device.disconnect = _disconnect_fixed  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.argv[0] = "bluezoo"
    sys.exit(_main_module.main())
