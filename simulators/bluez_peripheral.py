"""A simulator's GATT table served as a BlueZ peripheral (``lockgw-sim … --bluez``).

The same :class:`~simulators.gatt_server.GattServer` — services, characteristics,
handlers, link faults — registered through BlueZ's D-Bus API on one adapter: a GATT
application through ``org.bluez.GattManager1`` and an advertisement (local name,
service UUIDs, manufacturer data) through ``org.bluez.LEAdvertisingManager1``, with
dbus-fast (which bleak's BlueZ backend already uses). The device's BLE address is the
adapter's. It works against bluetoothd on a laptop with a real adapter and against
BlueZoo on a private bus (the tests).

How BlueZ's peripheral API maps onto the simulator's model:

- A central is a ``Device1`` object under our adapter; BlueZ passes its path as the
  ``device`` option of every ``ReadValue`` / ``WriteValue``. Each gets a
  :class:`BluezConnection` (with its own ``state``) on its first request or when BlueZ
  says it connected; ``on_connect`` / ``on_disconnect`` run as on the loopback transport.
- Requests of one central are handled one at a time, in order (ATT is sequential). A
  write without response (``type=command``) is answered at once and handled in order.
- BlueZ sends a characteristic's notification to **every** subscribed central (there is
  no per-central notify in its API), so run one central per simulated device.
- Faults: ``delay_ms`` delays each request and each notification, ``reply_delay_ms``
  each answer; ``corrupt`` garbles the next N values the device sends (the first byte
  becomes 0xFF: ATT itself is BlueZ's, so an undecodable *value* is the nearest fault);
  ``refuse`` disconnects every central that connects; ``drop`` disconnects every central
  (``Device1.Disconnect`` on our side); ``out_of_range`` stops advertising, drops and
  refuses until cleared.

The D-Bus objects themselves are in :mod:`simulators._bluez_objects`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog
from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError

from protocols import gattlink as gl
from protocols.errors import LockgwError
from simulators._bluez_objects import (
    Advertisement,
    CharacteristicObject,
    DescriptorObject,
    ServiceObject,
)
from simulators.gatt_server import CCCD_UUID, Characteristic, Connection, GattError, GattServer

__all__ = ["BluezConnection", "BluezPeripheral", "BluezUnavailable"]

log = structlog.get_logger("lockgw.sim.bluez")

BLUEZ = "org.bluez"
_PROPS = "org.freedesktop.DBus.Properties"
_OBJECTS = "org.freedesktop.DBus.ObjectManager"
_DEVICE = "org.bluez.Device1"
_ADAPTER = "org.bluez.Adapter1"
#: how long one call to bluetoothd may take
CALL_TIMEOUT = 10.0

#: ATT error → the BlueZ error a GATT application answers with (bluetoothd turns it back
#: into the ATT error on the air; bleak on the central turns that into
#: BleakGATTProtocolError)
_ERRORS = {
    gl.AttError.READ_NOT_PERMITTED: ("org.bluez.Error.NotPermitted", "Read not permitted"),
    gl.AttError.WRITE_NOT_PERMITTED: ("org.bluez.Error.NotPermitted", "Write not permitted"),
    gl.AttError.REQUEST_NOT_SUPPORTED: ("org.bluez.Error.NotSupported", "Not supported"),
    gl.AttError.INSUFFICIENT_AUTHORIZATION: ("org.bluez.Error.NotAuthorized", "Not authorized"),
    gl.AttError.INVALID_ATTRIBUTE_VALUE_LENGTH: ("org.bluez.Error.InvalidArguments", "Invalid Length"),
}


class BluezUnavailable(LockgwError):
    """BlueZ (or the adapter) is not there; the message says what to check."""


def _att_error(code: gl.AttError, message: str = "") -> DBusError:
    name, text = _ERRORS.get(
        code, ("org.bluez.Error.Failed", f"Operation failed with ATT error: 0x{int(code):02x}")
    )
    return DBusError(name, f"{text}{': ' + message if message else ''}"[:200])


def _device_path(options: dict[str, Any]) -> str:
    device = options.get("device")
    return str(device.value) if isinstance(device, Variant) else "unknown"


class BluezConnection(Connection):
    """One central as BlueZ shows it: a ``Device1`` under our adapter."""

    def __init__(self, peripheral: BluezPeripheral, conn_id: int, device_path: str) -> None:
        super().__init__(peripheral.server, conn_id, device_path)
        self._peripheral = peripheral
        self.device_path = device_path
        #: requests of this central, one at a time, in order
        self.turn = asyncio.Lock()
        self._work: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    def is_subscribed(self, char: Characteristic) -> bool:
        return self._peripheral.notifying(char)

    async def _notify(self, char: Characteristic, data: bytes) -> None:
        self.frames_sent += 1
        await self._peripheral.emit_value(char, data)

    def abort(self) -> None:
        self._peripheral.disconnect_central(self.device_path)

    async def disconnect(self, reason: str = "device disconnected") -> None:
        await self._peripheral.call_disconnect(self.device_path)

    def later(self, job: Callable[[], Awaitable[None]]) -> None:
        """Run ``job`` after this central's earlier requests (a write without response)."""
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run_work())
        self._work.put_nowait(job)

    async def _run_work(self) -> None:
        while True:
            job = await self._work.get()
            async with self.turn:
                try:
                    await job()
                except Exception as exc:  # no answer exists for a command
                    log.warning("write command failed", device=self.server.name, error=repr(exc))

    def closed(self) -> None:
        self._closed.set()
        if self._worker is not None:
            self._worker.cancel()


# -- the peripheral -------------------------------------------------------------------------
class BluezPeripheral:
    """Serves ``server`` through BlueZ on ``adapter``. ``start()`` / ``close()``."""

    def __init__(self, server: GattServer, adapter: str) -> None:
        self.server = server
        self.adapter = adapter
        self.adapter_path = f"/org/bluez/{adapter}"
        self.address = ""
        safe = "".join(c if c.isalnum() else "_" for c in server.name)
        self._root = f"/lockgw/sim/{safe}"
        self._app_path = f"{self._root}/gatt"
        self._adv_path = f"{self._root}/adv0"
        self._bus: MessageBus | None = None
        self._chars: dict[int, CharacteristicObject] = {}
        self._adv = Advertisement(server)
        self._links: dict[str, BluezConnection] = {}
        self._advertising = False
        self._registered = False
        self._register_lock = asyncio.Lock()
        self._outbox: asyncio.Queue[tuple[float, CharacteristicObject, bytes]] = asyncio.Queue()
        self._sender: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            self._bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        except (OSError, ValueError, DBusError) as exc:
            raise BluezUnavailable(
                f"BlueZ is not reachable on the system D-Bus ({exc}); is bluetoothd running?"
            ) from exc
        try:
            self.address = str(await self._get(self.adapter_path, _ADAPTER, "Address"))
            if not await self._get(self.adapter_path, _ADAPTER, "Powered"):
                await self._set(self.adapter_path, _ADAPTER, "Powered", Variant("b", True))
            self._export()
            self._bus.add_message_handler(self._on_signal)
            for rule in (
                f"type='signal',sender='{BLUEZ}',interface='{_PROPS}',"
                f"member='PropertiesChanged',path_namespace='{self.adapter_path}'",
                f"type='signal',sender='{BLUEZ}',interface='{_OBJECTS}'",
            ):
                await self._call("org.freedesktop.DBus", "/org/freedesktop/DBus",
                                 "org.freedesktop.DBus", "AddMatch", "s", [rule])
            self.server.faults._changed = self._faults_changed
            await self._register()
        except BaseException:
            bus, self._bus = self._bus, None
            bus.disconnect()
            with contextlib.suppress(Exception):
                await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
            raise

    async def close(self) -> None:
        self.server.faults._changed = None
        if self._sender is not None:
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
            self._sender = None
        for path in list(self._links):
            with contextlib.suppress(Exception):
                await self.call_disconnect(path)
            self._end(path)
        await self._unregister()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._bus is not None:
            bus, self._bus = self._bus, None
            bus.disconnect()
            with contextlib.suppress(Exception):
                await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _export(self) -> None:
        assert self._bus is not None
        for s_index, service in enumerate(self.server.services):
            s_path = f"{self._app_path}/service{s_index:02d}"
            self._bus.export(s_path, ServiceObject(service.uuid))
            for c_index, char in enumerate(service.characteristics):
                c_path = f"{s_path}/char{c_index:02d}"
                obj = CharacteristicObject(self, char, s_path)
                self._chars[char.handle] = obj
                self._bus.export(c_path, obj)
                d_index = 0
                for d_uuid, d_value in char.descriptors.values():
                    if d_uuid == CCCD_UUID:
                        continue  # BlueZ keeps the CCCD itself
                    self._bus.export(f"{c_path}/desc{d_index:02d}", DescriptorObject(d_uuid, d_value, c_path))
                    d_index += 1
        self._bus.export(self._adv_path, self._adv)

    async def _register(self) -> None:
        async with self._register_lock:
            await self._call(BLUEZ, self.adapter_path, "org.bluez.GattManager1",
                             "RegisterApplication", "oa{sv}", [self._app_path, {}])
            self._registered = True
            if not self.server.faults.out_of_range:
                await self._advertise(True)

    async def _unregister(self) -> None:
        async with self._register_lock:
            with contextlib.suppress(Exception):
                await self._advertise(False)
            if self._registered:
                self._registered = False
                with contextlib.suppress(Exception):
                    await self._call(BLUEZ, self.adapter_path, "org.bluez.GattManager1",
                                     "UnregisterApplication", "o", [self._app_path])

    async def _advertise(self, on: bool) -> None:
        if on == self._advertising:
            return
        if on:
            await self._call(BLUEZ, self.adapter_path, "org.bluez.LEAdvertisingManager1",
                             "RegisterAdvertisement", "oa{sv}", [self._adv_path, {}])
        else:
            await self._call(BLUEZ, self.adapter_path, "org.bluez.LEAdvertisingManager1",
                             "UnregisterAdvertisement", "o", [self._adv_path])
        self._advertising = on

    def advertisement_changed(self) -> None:
        if self._bus is not None:
            self._adv.changed()

    def _faults_changed(self) -> None:
        faults = self.server.faults
        if self._bus is None or not self._registered:
            return
        if faults.out_of_range or faults.refuse:
            for path in list(self._links):
                if faults.out_of_range:
                    self.disconnect_central(path)
        want = not faults.out_of_range
        if want != self._advertising:
            self._spawn(self._advertise_quietly(want))

    async def _advertise_quietly(self, on: bool) -> None:
        async with self._register_lock:
            with contextlib.suppress(DBusError, TimeoutError):
                await self._advertise(on)

    # -- D-Bus plumbing -------------------------------------------------------------------
    async def _call(  # noqa: PLR0917 - the fields of one D-Bus message
        self, destination: str, path: str, interface: str, member: str,
        signature: str = "", body: list[Any] | None = None,
    ) -> list[Any]:
        if self._bus is None:
            raise BluezUnavailable("not connected to the system D-Bus")
        async with asyncio.timeout(CALL_TIMEOUT):
            reply = await self._bus.call(Message(
                destination=destination, path=path, interface=interface, member=member,
                signature=signature, body=body or [],
            ))
        if reply is None:
            raise BluezUnavailable(f"{member}: no reply from {destination}")
        if reply.message_type == MessageType.ERROR:
            detail = reply.body[0] if reply.body else ""
            if reply.error_name in {
                "org.freedesktop.DBus.Error.ServiceUnknown",
                "org.freedesktop.DBus.Error.UnknownObject",
                "org.freedesktop.DBus.Error.UnknownMethod",
            }:
                raise BluezUnavailable(
                    f"no BlueZ adapter {self.adapter} ({reply.error_name}: {detail}); "
                    "check `bluetoothctl list` and --adapter"
                )
            raise DBusError(reply.error_name or "org.bluez.Error.Failed", str(detail))
        return list(reply.body)

    async def _get(self, path: str, interface: str, name: str) -> Any:
        body = await self._call(BLUEZ, path, _PROPS, "Get", "ss", [interface, name])
        return body[0].value

    async def _set(self, path: str, interface: str, name: str, value: Variant) -> None:
        await self._call(BLUEZ, path, _PROPS, "Set", "ssv", [interface, name, value])

    # -- centrals -------------------------------------------------------------------------
    def _on_signal(self, msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL:
            return
        path = msg.path or ""
        if msg.member == "PropertiesChanged" and path.startswith(self.adapter_path + "/dev_"):
            interface, changed, _ = msg.body
            if interface != _DEVICE or "Connected" not in changed:
                return
            if changed["Connected"].value:
                self._connected(path)
            else:
                self._end(path)
        elif msg.member == "InterfacesRemoved":
            gone, interfaces = msg.body
            if _DEVICE in interfaces and gone.startswith(self.adapter_path + "/"):
                self._end(gone)
            elif _ADAPTER in interfaces and gone == self.adapter_path:
                for link in list(self._links):
                    self._end(link)
                self._registered = self._advertising = False
                log.warning("bluez adapter removed", device=self.server.name, adapter=self.adapter)
        elif msg.member == "InterfacesAdded":
            added, interfaces = msg.body
            if _ADAPTER in interfaces and added == self.adapter_path:
                log.info("bluez adapter back", device=self.server.name, adapter=self.adapter)
                self._spawn(self._register())

    def _connected(self, path: str) -> None:
        faults = self.server.faults
        if faults.refuse or faults.out_of_range:
            log.info("central refused", device=self.server.name, central=path)
            self.disconnect_central(path)
            return
        self._link(path)

    def _link(self, path: str) -> BluezConnection:
        conn = self._links.get(path)
        if conn is not None:
            return conn
        conn = BluezConnection(self, self.server.new_link_id(), path)
        self._links[path] = conn
        self.server.adopt(conn)
        log.info("central connected", device=self.server.name, link=conn.id, central=path)
        hook = self.server.on_connect
        if hook is not None:
            result = hook(conn)
            if asyncio.iscoroutine(result):
                self._spawn(result)
        return conn

    def _end(self, path: str) -> None:
        conn = self._links.pop(path, None)
        if conn is None:
            return
        conn.closed()
        self.server.release(conn)
        log.info("central disconnected", device=self.server.name, link=conn.id)
        hook = self.server.on_disconnect
        if hook is not None:
            try:
                result = hook(conn)
                if asyncio.iscoroutine(result):
                    self._spawn(result)
            except Exception:
                log.exception("on_disconnect failed", device=self.server.name)

    def disconnect_central(self, path: str) -> None:
        self._spawn(self._disconnect_quietly(path))

    async def _disconnect_quietly(self, path: str) -> None:
        with contextlib.suppress(DBusError, BluezUnavailable, TimeoutError):
            await self.call_disconnect(path)

    async def call_disconnect(self, path: str) -> None:
        await self._call(BLUEZ, path, _DEVICE, "Disconnect")

    # -- requests ---------------------------------------------------------------------------
    def _central(self, options: dict[str, Any]) -> BluezConnection:
        faults = self.server.faults
        path = _device_path(options)
        if (faults.refuse or faults.out_of_range) and path not in self._links:
            self.disconnect_central(path)
            raise _att_error(gl.AttError.UNLIKELY_ERROR, "connection refused")
        return self._link(path)

    async def _delay(self, ms: float) -> None:
        if ms > 0:
            await asyncio.sleep(ms / 1000)

    def _garble(self, data: bytes) -> bytes:
        if data and self.server.faults.take_corrupt():
            return b"\xff" + data[1:]
        return data

    async def read(self, char: Characteristic, options: dict[str, Any]) -> bytes:
        conn = self._central(options)
        faults = self.server.faults
        async with conn.turn:
            await self._delay(faults.delay_ms)
            conn.frames_received += 1
            self.server.frames_received += 1
            if not char.properties & gl.Property.READ:
                raise _att_error(gl.AttError.READ_NOT_PERMITTED)
            try:
                if char.read_handler is not None:
                    value = char.read_handler(conn)
                    if asyncio.iscoroutine(value) or isinstance(value, Awaitable):
                        value = await value
                    data = bytes(value)
                else:
                    data = char.value
            except GattError as exc:
                raise _att_error(exc.code, exc.message) from exc
            except Exception as exc:
                log.exception("gatt handler failed", device=self.server.name)
                raise _att_error(gl.AttError.UNLIKELY_ERROR, repr(exc)) from exc
            offset = options.get("offset")
            data = data[int(offset.value):] if isinstance(offset, Variant) else data
            await self._delay(faults.reply_delay_ms + faults.delay_ms)
            conn.frames_sent += 1
            self.server.frames_sent += 1
            return self._garble(data)

    async def write(self, char: Characteristic, value: bytes, options: dict[str, Any]) -> None:
        conn = self._central(options)
        faults = self.server.faults
        kind = options.get("type")
        command = isinstance(kind, Variant) and kind.value == "command"
        handler = char.write_handler
        if command:
            if handler is None or not char.properties & gl.Property.WRITE_WITHOUT_RESPONSE:
                return  # a write command that is not allowed is dropped, as ATT does

            async def job() -> None:
                await self._delay(faults.delay_ms)
                conn.frames_received += 1
                self.server.frames_received += 1
                result = handler(conn, value)
                if result is not None:
                    await result

            conn.later(job)
            return
        async with conn.turn:
            await self._delay(faults.delay_ms)
            conn.frames_received += 1
            self.server.frames_received += 1
            if handler is None or not char.properties & gl.Property.WRITE:
                raise _att_error(gl.AttError.WRITE_NOT_PERMITTED)
            try:
                result = handler(conn, value)
                if result is not None:
                    await result
            except GattError as exc:
                raise _att_error(exc.code, exc.message) from exc
            except Exception as exc:
                log.exception("gatt handler failed", device=self.server.name)
                raise _att_error(gl.AttError.UNLIKELY_ERROR, repr(exc)) from exc
            await self._delay(faults.reply_delay_ms + faults.delay_ms)
            self.server.frames_sent += 1  # the write response

    async def subscribe(self, obj: CharacteristicObject, on: bool) -> None:
        if not obj.char.properties & (gl.Property.NOTIFY | gl.Property.INDICATE):
            raise DBusError("org.bluez.Error.NotSupported", "Not supported")
        obj.notifying = on
        obj.emit_properties_changed({"Notifying": on})
        if on and obj.char.on_subscribe is not None:
            for conn in list(self._links.values()):
                result = obj.char.on_subscribe(conn)
                if result is not None:
                    await result

    def notifying(self, char: Characteristic) -> bool:
        obj = self._chars.get(char.handle)
        return obj is not None and obj.notifying

    # -- notifications --------------------------------------------------------------------
    async def emit_value(self, char: Characteristic, data: bytes) -> None:
        """One notification (or indication) of ``data`` on ``char``, leaving ``delay_ms``
        from now; notifications leave in the order they were sent, and the sender does not
        wait for the delay (as on the loopback transport, where a frame is queued)."""
        obj = self._chars.get(char.handle)
        if obj is None or self._bus is None:
            return
        loop = asyncio.get_running_loop()
        self._outbox.put_nowait((loop.time() + self.server.faults.delay_ms / 1000, obj, data))
        if self._sender is None:
            self._sender = loop.create_task(self._send_values())
        await asyncio.sleep(0)

    async def _send_values(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, obj, data = await self._outbox.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            obj.value = self._garble(data)
            obj.emit_properties_changed({"Value": obj.value})
            self.server.frames_sent += 1

    async def notify_all(self, char: Characteristic, data: bytes) -> int:
        if not self.notifying(char):
            return 0
        await self.emit_value(char, data)
        return len(self._links)
