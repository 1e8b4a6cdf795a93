"""What a driver is: a small ABC, the shared parts written once.

A driver talks to one lock or key safe through the ordinary bleak API. Which bleak
backend is used is decided by the address (``loopback://host:port`` → the
loopback backend for simulators, otherwise BlueZ); nothing in a driver knows it is
simulated.

Subclasses implement ``_connect``, ``_disconnect``, ``_execute``, ``_refresh``,
``_pair`` and ``device_info``; the base adds the per-device lock (commands are
serialised), a timeout on every wait, the link itself (:meth:`Driver._open_link`:
loopback, or BlueZ on ``adapter`` through bleak-retry-connector, :mod:`drivers.ble`),
and wraps every failure into :class:`DeviceUnavailable` (with a typed
:class:`~protocols.errors.Unreachable` cause) / :class:`DeviceFailed` with the device id
(:func:`unavailable` is that mapping, for drivers that wrap errors themselves).

BlueZ's transient failures map onto the supervisor's reconnect rules by type, never by
the gateway reading messages: a device not found in range or in BlueZ's cache →
``NOT_FOUND``; ``org.bluez.Error.InProgress``, ``le-connection-abort-by-local``, no
connection slot → ``ABORTED``; the adapter gone or off → ``ADAPTER_MISSING``; a wait that
ran out → ``NO_ANSWER``. All are ``DeviceUnavailable``: the phone hears
``device_unavailable``, the supervisor marks the device offline and reconnects with
capped backoff.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, TypeVar

from bleak import BleakClient
from bleak.exc import (
    BleakBluetoothNotAvailableError,
    BleakDBusError,
    BleakDeviceNotFoundError,
    BleakError,
    BleakGATTProtocolError,
)
from bleak_retry_connector import (
    BleakAbortedError,
    BleakNotFoundError,
    BleakOutOfConnectionSlotsError,
)

from drivers import ble
from protocols.device import Action, Capability, DeviceInfo, DeviceKind, DeviceState
from protocols.errors import DeviceError, DeviceFailed, DeviceUnavailable, Unreachable

__all__ = ["Driver", "PairingSlot", "SecretStore", "unavailable"]

#: D-Bus errors of BlueZ that mean "try again": the stack is busy or aborted the attempt
_BLUEZ_ABORTED = frozenset({
    "org.bluez.Error.InProgress",
    "org.bluez.Error.AlreadyConnected",
    "org.bluez.Error.NotReady",
})
#: D-Bus errors that mean the adapter (or BlueZ itself) is not there
_BLUEZ_NO_ADAPTER = frozenset({
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.bluez.Error.NotAvailable",
})
#: the reasons BlueZ gives with org.bluez.Error.Failed when it aborts a connection
_BLUEZ_ABORT_REASONS = ("le-connection-abort-by-local", "abort-by-local", "Software caused connection abort")


def _cause(exc: BaseException) -> Unreachable:
    if isinstance(exc, TimeoutError):
        return Unreachable.NO_ANSWER
    if isinstance(exc, BleakBluetoothNotAvailableError):
        return Unreachable.ADAPTER_MISSING
    if isinstance(exc, BleakDeviceNotFoundError | BleakNotFoundError):
        return Unreachable.NOT_FOUND
    if isinstance(exc, BleakAbortedError | BleakOutOfConnectionSlotsError):
        return Unreachable.ABORTED
    if isinstance(exc, BleakDBusError):
        if exc.dbus_error in _BLUEZ_ABORTED:
            return Unreachable.ABORTED
        if exc.dbus_error in _BLUEZ_NO_ADAPTER:
            return Unreachable.ADAPTER_MISSING
        if exc.dbus_error == "org.freedesktop.DBus.Error.UnknownObject":
            return Unreachable.NOT_FOUND  # the device object went (adapter removed, cache cleared)
        details = exc.dbus_error_details or ""
        if any(reason in details for reason in _BLUEZ_ABORT_REASONS):
            return Unreachable.ABORTED
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, BleakError | TimeoutError) and cause is not exc:
        return _cause(cause)
    return Unreachable.OTHER


def unavailable(device_id: str, what: str, exc: BaseException) -> DeviceUnavailable:
    """The typed :class:`DeviceUnavailable` for a link-layer failure ``exc`` during ``what``."""
    text = (
        str(exc.args[0])
        if isinstance(exc, BleakBluetoothNotAvailableError) and exc.args
        else str(exc) or type(exc).__name__
    )
    return DeviceUnavailable(device_id, f"{what}: {text}", _cause(exc))

T = TypeVar("T")


class SecretStore(Protocol):
    """Where a driver keeps what pairing produced (keys, ids). The gateway's
    implementation (``gateway.devices.FileSecretStore``) writes
    ``<data_dir>/devices/keys/<device>.json`` with mode 0600 in a 0700 directory."""

    def load(self, device_id: str) -> dict[str, Any] | None: ...

    def save(self, device_id: str, secrets: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class PairingSlot:
    """One pairing a device holds: its key id (hex), and whether it is this gateway's."""

    key_id: str
    own: bool


class Driver(ABC):
    """One device. Long-lived: ``async with driver: ...`` connects and disconnects."""

    #: registry name, e.g. ``carelock-lock``
    name: ClassVar[str]
    kind: ClassVar[DeviceKind]
    capabilities: ClassVar[frozenset[Capability]]
    #: how the supervisor reaches this device unless the config says (``connection``):
    #: "keep" a link, or connect "on_demand" per command and poll (battery-powered locks
    #: whose maker advises against a held link)
    default_connection: ClassVar[Literal["keep", "on_demand"]] = "keep"
    #: seconds between health polls unless the config says (``health_interval``)
    default_health_interval: ClassVar[float] = 60.0
    #: what an installer must know before pairing (``lockgw pair`` prints it first)
    pairing_notice: ClassVar[str | None] = None
    #: pairing makes a code both sides show, confirmed on the device (``on_pairing_code``)
    shows_pairing_code: ClassVar[bool] = False

    def __init__(
        self,
        device_id: str,
        address: str,
        *,
        secrets: SecretStore,
        options: Mapping[str, Any] | None = None,
        timeout: float = 5.0,
        adapter: str = "hci0",
    ) -> None:
        self.device_id = device_id
        self.address = address
        #: the BlueZ adapter for BLE addresses (``[bluetooth] adapter``)
        self.adapter = adapter
        self.secrets = secrets
        self.options = dict(options or {})
        self.timeout = timeout
        self._lock = asyncio.Lock()
        self._events: asyncio.Queue[DeviceState] = asyncio.Queue(maxsize=256)
        self._link_listeners: list[Callable[[], None]] = []
        #: told the pairing code as soon as pairing has one, while the device still waits
        #: for a person to confirm it there (``lockgw pair`` prints it)
        self.on_pairing_code: Callable[[str], None] | None = None

    # -- link loss ------------------------------------------------------------------------
    def on_link_lost(self, cb: Callable[[], None]) -> None:
        """Call ``cb()`` (from the event loop) when an established link drops by itself,
        so a supervisor need not poll ``is_connected``."""
        self._link_listeners.append(cb)

    def _link_lost(self) -> None:
        """Subclasses call this from bleak's disconnected callback."""
        for cb in self._link_listeners:
            cb()

    # -- what subclasses write ------------------------------------------------------------
    @abstractmethod
    async def _connect(self) -> None: ...

    @abstractmethod
    async def _disconnect(self) -> None: ...

    @abstractmethod
    async def _execute(self, action: Action) -> DeviceState: ...

    @abstractmethod
    async def _refresh(self) -> DeviceState: ...

    @abstractmethod
    async def _pair(self) -> None: ...

    @abstractmethod
    async def device_info(self) -> DeviceInfo: ...

    @property
    @abstractmethod
    def is_connected(self) -> bool: ...

    # -- shared behaviour -----------------------------------------------------------------
    @property
    def pair_timeout(self) -> float:
        """Seconds ``pair`` may take at most (longer where a person confirms on the device)."""
        return self.timeout

    async def _guard(self, what: str, aw: Awaitable[T], *, timeout: float | None = None) -> T:
        limit = self.timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                return await aw
        except DeviceError:
            raise
        except TimeoutError as exc:
            raise DeviceUnavailable(
                self.device_id, f"{what}: no answer in {limit:g} s", Unreachable.NO_ANSWER
            ) from exc
        except BleakGATTProtocolError as exc:  # the device answered with an ATT error
            raise DeviceFailed(self.device_id, f"{what}: {exc}") from exc
        except (OSError, EOFError, BleakError) as exc:  # link down, refused, not found
            raise unavailable(self.device_id, what, exc) from exc

    async def _open_link(
        self,
        *,
        disconnected_callback: Callable[[BleakClient], None] | None = None,
        required: tuple[str, ...] = (),
    ) -> BleakClient:
        """A connected bleak client for this device: the loopback backend for
        ``loopback://`` addresses, otherwise BlueZ on :attr:`adapter` with
        bleak-retry-connector (:func:`drivers.ble.connect`); every characteristic in
        ``required`` is checked to be there exactly once."""
        return await ble.connect(
            self.address,
            adapter=self.adapter,
            name=self.device_id,
            disconnected_callback=disconnected_callback,
            timeout=self.timeout,
            required=required,
        )

    async def connect(self) -> None:
        async with self._lock:
            await self._guard("connect", self._connect())

    async def disconnect(self) -> None:
        async with self._lock:
            await self._guard("disconnect", self._disconnect())

    async def execute(self, action: Action) -> DeviceState:
        """Do ``action``; return the state the device confirms. Serialised per device."""
        async with self._lock:
            return await self._guard(action.value, self._execute(action))

    async def refresh(self) -> DeviceState:
        async with self._lock:
            return await self._guard("refresh", self._refresh())

    async def pair(self) -> None:
        """Installer step: pair with the device and store its secrets via ``self.secrets``."""
        async with self._lock:
            await self._guard("pair", self._pair(), timeout=self.pair_timeout)

    async def pairings(self) -> list[PairingSlot] | None:
        """The pairings the device holds, when it can list them (None: it cannot)."""
        return None

    async def remove_pairing(self, key_id: str) -> None:
        """Make the device forget one pairing (hex key id)."""
        raise DeviceFailed(self.device_id, f"a {self.name} device cannot remove pairings")

    @property
    def is_paired(self) -> bool:
        return self.secrets.load(self.device_id) is not None

    def _publish(self, state: DeviceState) -> None:
        """Subclasses call this for every unsolicited state notification."""
        if self._events.full():  # a stalled consumer loses old snapshots, never blocks the link
            self._events.get_nowait()
        self._events.put_nowait(state)

    async def wakeups(self) -> AsyncIterator[None]:
        """One item each time the device signals, without a link, that it has news (Nuki:
        a bit in its advertisement), so an on-demand supervisor looks now rather than at
        its next poll. The default: a device that never does."""
        await asyncio.Event().wait()
        yield  # pragma: no cover - never reached

    async def events(self) -> AsyncIterator[DeviceState]:
        """Unsolicited state snapshots (door opened, jam, battery, key returned)."""
        while True:
            yield await self._events.get()

    async def __aenter__(self) -> Driver:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()
