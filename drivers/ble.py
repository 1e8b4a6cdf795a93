"""Which bleak backend a device address uses, and the client drivers make.

``loopback://host:port`` → the loopback backend (a simulator over TCP); anything else
→ bleak's own platform backend (BlueZ on the hub). Drivers call :func:`make_client`
and then use only the ordinary bleak API, so the same driver code runs against a
simulator and against hardware::

    client = make_client(address, disconnected_callback=on_lost, timeout=5.0)
    await client.connect()
"""

from __future__ import annotations

from typing import Any

from bleak import BleakClient, BleakScanner
from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import BaseBleakScanner

from drivers.loopback import LoopbackClientBackend, LoopbackScannerBackend
from protocols.gattlink import SCHEME

__all__ = [
    "client_backend_for",
    "find_device",
    "is_loopback",
    "make_client",
    "scanner_backend_for",
]


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


async def find_device(address: str, timeout: float = 10.0) -> BLEDevice | None:
    """Scan for the device with this address; None when it is not seen within ``timeout``."""
    backend = scanner_backend_for(address)
    if backend is not None:
        return await BleakScanner.find_device_by_address(address, timeout=timeout, backend=backend)
    return await BleakScanner.find_device_by_address(address, timeout=timeout)
