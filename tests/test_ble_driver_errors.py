"""A driver written on the ordinary bleak API, against a simulator: bleak's errors become the
typed DeviceUnavailable / DeviceFailed at the driver edge (drivers/base.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from bleak import BleakClient
from bleak.exc import (
    BleakBluetoothNotAvailableError,
    BleakBluetoothNotAvailableReason,
    BleakDBusError,
    BleakDeviceNotFoundError,
    BleakError,
)
from bleak_retry_connector import (
    BleakAbortedError,
    BleakNotFoundError,
    BleakOutOfConnectionSlotsError,
)

from drivers.base import Driver, unavailable
from drivers.ble import make_client
from protocols.device import Action, Capability, DeviceInfo, DeviceKind, DeviceState
from protocols.errors import DeviceFailed, DeviceUnavailable, Reason, Unreachable
from tests.test_gattlink_bleak import BATTERY_LEVEL, CMD, Device, build_device


class _Secrets:
    def load(self, device_id: str) -> dict[str, Any] | None:
        return None

    def save(self, device_id: str, secrets: dict[str, Any]) -> None:
        raise AssertionError("not used")


class EchoDriver(Driver):
    name = "test-echo"
    kind = DeviceKind.LOCK
    capabilities = frozenset({Capability.LOCK, Capability.BATTERY})

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.client: BleakClient = make_client(self.address, timeout=self.timeout)

    async def _connect(self) -> None:
        await self.client.connect()

    async def _disconnect(self) -> None:
        await self.client.disconnect()

    async def _execute(self, action: Action) -> DeviceState:
        await self.client.write_gatt_char(CMD, action.value.encode(), response=True)
        return await self._refresh()

    async def _refresh(self) -> DeviceState:
        level = await self.client.read_gatt_char(BATTERY_LEVEL)
        return DeviceState(kind=self.kind, battery=level[0])

    async def _pair(self) -> None:
        raise NotImplementedError

    async def device_info(self) -> DeviceInfo:
        return DeviceInfo()

    @property
    def is_connected(self) -> bool:
        return self.client.is_connected


@pytest.fixture
async def device() -> AsyncIterator[Device]:
    dev = build_device()
    async with dev.server:
        yield dev


def _driver(address: str) -> EchoDriver:
    return EchoDriver("front-lock", address, secrets=_Secrets(), timeout=2.0)


async def test_a_bleak_driver_runs_against_the_simulator(device: Device) -> None:
    async with _driver(device.address) as drv:
        assert (await drv.execute(Action.LOCK)).battery == 100
    assert [w for _, w in device.writes] == [b"lock"]


async def test_a_dropped_link_is_device_unavailable(device: Device) -> None:
    drv = _driver(device.address)
    await drv.connect()
    device.server.faults.apply("drop")
    with pytest.raises(DeviceUnavailable) as exc:
        for _ in range(100):
            await drv.refresh()
    assert exc.value.reason is Reason.DEVICE_UNAVAILABLE and exc.value.device_id == "front-lock"


async def test_an_att_error_answer_is_device_failed(device: Device) -> None:
    async with _driver(device.address) as drv:
        with pytest.raises(DeviceFailed, match="Value Not Allowed"):
            await drv._guard("refuse", drv.client.write_gatt_char(CMD, b"refuse", response=True))


async def test_nobody_listening_and_silence_are_device_unavailable(device: Device) -> None:
    device.server.faults.apply("out_of_range", True)
    drv = _driver(device.address)
    drv.timeout = 0.3
    with pytest.raises(DeviceUnavailable, match="no answer"):
        await drv.connect()
    address = device.server.address
    await device.server.close()
    with pytest.raises(DeviceUnavailable, match="not found"):
        await _driver(address).connect()


# -- BlueZ's failures, typed at the driver edge (drivers/base.unavailable) -------------------
@pytest.mark.parametrize(
    ("exc", "cause"),
    [
        (BleakDBusError("org.bluez.Error.InProgress", ["Operation already in progress"]),
         Unreachable.ABORTED),
        (BleakDBusError("org.bluez.Error.Failed", ["le-connection-abort-by-local"]),
         Unreachable.ABORTED),
        (BleakAbortedError("aborted after 3 attempts"), Unreachable.ABORTED),
        (BleakOutOfConnectionSlotsError("no free slot"), Unreachable.ABORTED),
        (BleakNotFoundError("not found after 3 attempts"), Unreachable.NOT_FOUND),
        (BleakDeviceNotFoundError("02:00:00:00:00:01", "not in BlueZ's cache"),
         Unreachable.NOT_FOUND),
        (BleakDBusError("org.freedesktop.DBus.Error.UnknownObject", ["gone"]),
         Unreachable.NOT_FOUND),
        (BleakDBusError("org.freedesktop.DBus.Error.ServiceUnknown", ["no bluetoothd"]),
         Unreachable.ADAPTER_MISSING),
        (BleakBluetoothNotAvailableError(
            "Bluetooth adapter hci0 is missing", BleakBluetoothNotAvailableReason.NO_BLUETOOTH),
         Unreachable.ADAPTER_MISSING),
        (TimeoutError(), Unreachable.NO_ANSWER),
        (BleakError("something else"), Unreachable.OTHER),
    ],
)
def test_bluez_failures_become_device_unavailable_with_a_typed_cause(
    exc: BaseException, cause: Unreachable
) -> None:
    err = unavailable("front-lock", "connect", exc)
    assert isinstance(err, DeviceUnavailable)
    assert err.reason is Reason.DEVICE_UNAVAILABLE
    assert err.cause is cause
    assert err.device_id == "front-lock" and err.detail.startswith("connect: ")
    assert "(" not in err.detail or cause is not Unreachable.ADAPTER_MISSING  # no tuple repr


def test_a_cause_wrapped_by_bleak_retry_connector_is_found_underneath() -> None:
    try:
        try:
            raise BleakDBusError("org.bluez.Error.InProgress", [])
        except BleakDBusError as inner:
            raise BleakError("Failed to connect after 3 attempt(s)") from inner
    except BleakError as outer:
        assert unavailable("lock", "connect", outer).cause is Unreachable.ABORTED
