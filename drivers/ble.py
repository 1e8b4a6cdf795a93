"""How drivers reach a device: the bleak client, scanning, and BlueZ's connection rules.

``loopback://host:port`` → the loopback backend (a simulator over TCP); anything else
is a BLE address reached through BlueZ on the configured adapter (``[bluetooth]
adapter``, default ``hci0``). Drivers call :func:`connect` and then use only the
ordinary bleak API, so the same driver code runs against a simulator and a device::

    client = await connect(address, adapter="hci0", name="front-lock",
                           disconnected_callback=on_lost, required=(CONTROL_POINT,))

Over BlueZ, :func:`connect` does what Home Assistant's Bluetooth integrations do:

1. **find** the device: BlueZ's device cache on that adapter first, then a scan on that
   adapter (the callback is registered before discovery starts, so a device announced
   once is not missed). Scans go through one shared :class:`AdapterScanner` per adapter:
   BlueZ refuses a second ``StartDiscovery`` from the same process (``InProgress``).
2. **connect** through ``bleak-retry-connector``'s ``establish_connection``, which
   retries BlueZ's transient failures (``InProgress``, ``le-connection-abort-by-local``,
   a device missing from the cache) with backoff.
3. **check the GATT table**: every ``required`` characteristic must resolve to exactly
   one characteristic. When it does not (BlueZ kept a stale table: a firmware update, a
   device that re-registered its services), the device is removed from BlueZ's cache
   (``Adapter1.RemoveDevice``) and found and connected once more.

Failures are bleak's exceptions; :mod:`drivers.base` turns them into typed
:class:`~protocols.errors.DeviceUnavailable` errors at the driver's edge.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, ClassVar

import structlog
from bleak import BleakClient, BleakScanner
from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.exc import (
    BleakBluetoothNotAvailableError,
    BleakBluetoothNotAvailableReason,
    BleakDeviceNotFoundError,
    BleakError,
)
from bleak_retry_connector import BleakClientWithServiceCache, establish_connection
from bleak_retry_connector import get_device_by_adapter as _cached_device

from drivers.loopback import LoopbackClientBackend, LoopbackScannerBackend
from protocols.gattlink import SCHEME

__all__ = [
    "AdapterScanner",
    "GattTableMismatch",
    "client_backend_for",
    "connect",
    "find_device",
    "forget_device",
    "is_loopback",
    "make_client",
    "scanner_backend_for",
    "watch_advertisements",
]

log = structlog.get_logger("lockgw.drivers.ble")

#: connection attempts establish_connection makes before it gives up (HA uses 3-4)
CONNECT_ATTEMPTS = 3

AdvertisementCallback = Callable[[BLEDevice, AdvertisementData], None]


class GattTableMismatch(BleakError):
    """A characteristic the driver needs is missing (``duplicated`` False) or there more
    than once (a stale BlueZ cache); ``uuid`` names it."""

    def __init__(self, uuid: str, *, duplicated: bool) -> None:
        super().__init__(
            f"characteristic {uuid} is " + ("there more than once" if duplicated else "missing")
        )
        self.uuid = uuid
        self.duplicated = duplicated


def _address(address_or_device: str | BLEDevice) -> str:
    return (
        address_or_device.address if isinstance(address_or_device, BLEDevice) else address_or_device
    )


def is_loopback(address_or_device: str | BLEDevice) -> bool:
    return _address(address_or_device).startswith(SCHEME)


def client_backend_for(address_or_device: str | BLEDevice) -> type[BaseBleakClient] | None:
    """The bleak client backend for this address; None = bleak's platform default."""
    return LoopbackClientBackend if is_loopback(address_or_device) else None


def scanner_backend_for(address: str) -> type[BaseBleakScanner] | None:
    """A scanner backend that can see this address; None = bleak's platform default."""
    return LoopbackScannerBackend.targeting([address]) if is_loopback(address) else None


def make_client(address_or_device: str | BLEDevice, **kw: Any) -> BleakClient:
    """A :class:`bleak.BleakClient` for this device, with the backend its address needs.

    ``kw`` goes to ``BleakClient`` unchanged (``disconnected_callback``, ``timeout``,
    ``services``, …); an explicit ``backend`` wins."""
    backend = client_backend_for(address_or_device)
    if backend is not None:
        kw.setdefault("backend", backend)
    return BleakClient(address_or_device, **kw)


# -- scanning ---------------------------------------------------------------------------------
class AdapterScanner:
    """One BleakScanner per adapter (or per loopback address), shared by every watcher in
    this process; it runs while at least one watcher is registered."""

    _shared: ClassVar[dict[str, AdapterScanner]] = {}

    def __init__(self, key: str, factory: Callable[[AdvertisementCallback], BleakScanner]) -> None:
        self.key = key
        self._factory = factory
        self._watchers: set[AdvertisementCallback] = set()
        self._scanner: BleakScanner | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def for_address(cls, address: str, adapter: str) -> AdapterScanner:
        if is_loopback(address):
            key = address
            backend = scanner_backend_for(address)

            def loopback(cb: AdvertisementCallback) -> BleakScanner:
                return BleakScanner(cb, backend=backend)

            factory = loopback
        else:
            key = f"bluez:{adapter}"

            def bluez(cb: AdvertisementCallback) -> BleakScanner:
                return BleakScanner(cb, bluez={"adapter": adapter})

            factory = bluez
        loop_key = f"{key}@{id(asyncio.get_running_loop())}"
        scanner = cls._shared.get(loop_key)
        if scanner is None:
            scanner = cls._shared[loop_key] = cls(loop_key, factory)
        return scanner

    def _dispatch(self, device: BLEDevice, adv: AdvertisementData) -> None:
        for cb in list(self._watchers):
            cb(device, adv)

    @contextlib.asynccontextmanager
    async def watching(self, callback: AdvertisementCallback) -> AsyncIterator[None]:
        async with self._lock:
            self._watchers.add(callback)
            if self._scanner is None:
                scanner = self._factory(self._dispatch)
                try:
                    await scanner.start()
                except BaseException:
                    self._watchers.discard(callback)
                    raise
                self._scanner = scanner
        try:
            yield
        finally:
            async with self._lock:
                self._watchers.discard(callback)
                if not self._watchers and self._scanner is not None:
                    scanner, self._scanner = self._scanner, None
                    with contextlib.suppress(BleakError, OSError, EOFError):
                        await scanner.stop()
                    self._shared.pop(self.key, None)


@contextlib.asynccontextmanager
async def watch_advertisements(
    address: str, callback: AdvertisementCallback, *, adapter: str = "hci0"
) -> AsyncIterator[None]:
    """Call ``callback`` for every advertisement of ``address`` while inside."""
    want = address.upper()

    def mine(device: BLEDevice, adv: AdvertisementData) -> None:
        if device.address.upper() == want:
            callback(device, adv)

    async with AdapterScanner.for_address(address, adapter).watching(mine):
        yield


async def find_device(
    address: str, timeout: float = 10.0, *, adapter: str = "hci0"
) -> BLEDevice | None:
    """The device with this address: BlueZ's cache on ``adapter`` first, else the first
    advertisement seen within ``timeout``; None when it is not seen."""
    if not is_loopback(address):
        cached = await _cached_device(address, adapter)
        if cached is not None:
            return cached
    found: asyncio.Future[BLEDevice] = asyncio.get_running_loop().create_future()

    def seen(device: BLEDevice, _adv: AdvertisementData) -> None:
        if not found.done():
            found.set_result(device)

    async with watch_advertisements(address, seen, adapter=adapter):
        try:
            async with asyncio.timeout(timeout):
                return await found
        except TimeoutError:
            return None


async def _adapter_state(adapter: str) -> BleakBluetoothNotAvailableReason | None:
    """None when BlueZ has this adapter powered; else why not (asked over D-Bus, so the
    answer is typed rather than read from an error message)."""
    from dbus_fast import BusType, Message, MessageType, Variant
    from dbus_fast.aio import MessageBus

    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    try:
        async with asyncio.timeout(5):
            reply = await bus.call(Message(
                destination="org.bluez", path=f"/org/bluez/{adapter}",
                interface="org.freedesktop.DBus.Properties", member="Get",
                signature="ss", body=["org.bluez.Adapter1", "Powered"],
            ))
    finally:
        bus.disconnect()
        with contextlib.suppress(Exception):
            await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
    if reply is None or reply.message_type == MessageType.ERROR:
        return BleakBluetoothNotAvailableReason.NO_BLUETOOTH
    powered = reply.body[0]
    if isinstance(powered, Variant) and powered.value is False:
        return BleakBluetoothNotAvailableReason.POWERED_OFF
    return None


async def _find_on_adapter(address: str, timeout: float, adapter: str) -> BLEDevice | None:
    try:
        return await find_device(address, timeout, adapter=adapter)
    except BleakError as exc:
        with contextlib.suppress(OSError, TimeoutError, ValueError):
            why = await _adapter_state(adapter)
            if why is not None:
                raise BleakBluetoothNotAvailableError(
                    f"Bluetooth adapter {adapter} is "
                    + ("powered off" if why is BleakBluetoothNotAvailableReason.POWERED_OFF
                       else "missing"),
                    why,
                ) from exc
        raise


async def forget_device(device: BLEDevice) -> None:
    """Remove a device from BlueZ's cache (its stale GATT table with it), as
    ``bluetoothctl remove`` does; the next scan finds it afresh."""
    if is_loopback(device):
        return
    from dbus_fast import BusType, Message
    from dbus_fast.aio import MessageBus

    details = device.details if isinstance(device.details, dict) else {}
    path = details.get("path")
    if not isinstance(path, str) or "/dev_" not in path:
        return
    adapter_path = path.rsplit("/", 1)[0]
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    try:
        async with asyncio.timeout(5):
            await bus.call(Message(
                destination="org.bluez", path=adapter_path, interface="org.bluez.Adapter1",
                member="RemoveDevice", signature="o", body=[path],
            ))
    finally:
        bus.disconnect()
        with contextlib.suppress(Exception):
            await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]


def _check_table(client: BleakClient, required: Iterable[str]) -> None:
    for uuid in required:
        try:
            char = client.services.get_characteristic(uuid)
        except BleakError as exc:  # "Multiple Characteristics with this UUID"
            raise GattTableMismatch(uuid, duplicated=True) from exc
        if char is None:
            raise GattTableMismatch(uuid, duplicated=False)


async def connect(
    address: str,
    *,
    adapter: str = "hci0",
    name: str = "",
    disconnected_callback: Callable[[BleakClient], None] | None = None,
    timeout: float = 10.0,
    required: Iterable[str] = (),
) -> BleakClient:
    """A connected client for the device at ``address`` (see the module docstring).

    Raises ``BleakDeviceNotFoundError`` when the device is not seen within ``timeout``,
    ``GattTableMismatch`` when a required characteristic is still missing after a fresh
    connection, and bleak's / bleak-retry-connector's errors for the rest."""
    needed = tuple(required)
    if is_loopback(address):
        client = make_client(address, disconnected_callback=disconnected_callback, timeout=timeout)
        await client.connect()
        try:
            _check_table(client, needed)
        except BaseException:
            with contextlib.suppress(BleakError, OSError, EOFError):
                await client.disconnect()
            raise
        return client
    for fresh in (False, True):
        device = await _find_on_adapter(address, timeout, adapter)
        if device is None:
            raise BleakDeviceNotFoundError(
                address, f"{address} was not seen on {adapter} within {timeout:g} s"
            )
        bluez_client = await establish_connection(
            BleakClientWithServiceCache,
            device,
            name or address,
            disconnected_callback=disconnected_callback,
            max_attempts=CONNECT_ATTEMPTS,
            # the table BlueZ resolves for this connection, not bleak's copy from an earlier
            # one: a lock whose table changed (firmware) must not be written at stale paths
            use_services_cache=False,
        )
        try:
            _check_table(bluez_client, needed)
        except GattTableMismatch as exc:
            with contextlib.suppress(BleakError, OSError, EOFError):
                await bluez_client.disconnect()
            if fresh:
                raise
            log.info("ble.stale_gatt_table", address=address, adapter=adapter, detail=str(exc))
            await forget_device(device)
            continue
        except BaseException:
            with contextlib.suppress(BleakError, OSError, EOFError):
                await bluez_client.disconnect()
            raise
        return bluez_client
    raise AssertionError("unreachable")  # pragma: no cover
