"""What a driver is: a small ABC, the shared parts written once.

A driver talks to one lock or key safe through the ordinary bleak API. Which bleak
backend is used is decided by the address (``loopback://host:port`` → the
loopback backend for simulators, otherwise BlueZ); nothing in a driver knows it is
simulated.

Subclasses implement ``_connect``, ``_disconnect``, ``_execute``, ``_refresh``,
``_pair`` and ``device_info``; the base adds the per-device lock (commands are
serialised), a timeout on every wait, and wraps every failure into
:class:`DeviceUnavailable` / :class:`DeviceFailed` with the device id.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, ClassVar, Protocol, TypeVar

from bleak.exc import BleakError, BleakGATTProtocolError

from protocols.device import Action, Capability, DeviceInfo, DeviceKind, DeviceState
from protocols.errors import DeviceError, DeviceFailed, DeviceUnavailable

__all__ = ["Driver", "SecretStore"]

T = TypeVar("T")


class SecretStore(Protocol):
    """Where a driver keeps what pairing produced (keys, ids). The gateway's
    implementation (``gateway.devices.FileSecretStore``) writes
    ``<data_dir>/devices/keys/<device>.json`` with mode 0600 in a 0700 directory."""

    def load(self, device_id: str) -> dict[str, Any] | None: ...

    def save(self, device_id: str, secrets: dict[str, Any]) -> None: ...


class Driver(ABC):
    """One device. Long-lived: ``async with driver: ...`` connects and disconnects."""

    #: registry name, e.g. ``carelock-lock``
    name: ClassVar[str]
    kind: ClassVar[DeviceKind]
    capabilities: ClassVar[frozenset[Capability]]

    def __init__(
        self,
        device_id: str,
        address: str,
        *,
        secrets: SecretStore,
        options: Mapping[str, Any] | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.device_id = device_id
        self.address = address
        self.secrets = secrets
        self.options = dict(options or {})
        self.timeout = timeout
        self._lock = asyncio.Lock()
        self._events: asyncio.Queue[DeviceState] = asyncio.Queue(maxsize=256)
        self._link_listeners: list[Callable[[], None]] = []

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
    async def _guard(self, what: str, aw: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self.timeout):
                return await aw
        except DeviceError:
            raise
        except TimeoutError as exc:
            raise DeviceUnavailable(
                self.device_id, f"{what}: no answer in {self.timeout:g} s"
            ) from exc
        except BleakGATTProtocolError as exc:  # the device answered with an ATT error
            raise DeviceFailed(self.device_id, f"{what}: {exc}") from exc
        except (OSError, EOFError, BleakError) as exc:  # link down, refused, not found
            raise DeviceUnavailable(self.device_id, f"{what}: {exc}") from exc

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
            await self._guard("pair", self._pair())

    @property
    def is_paired(self) -> bool:
        return self.secrets.load(self.device_id) is not None

    def _publish(self, state: DeviceState) -> None:
        """Subclasses call this for every unsolicited state notification."""
        if self._events.full():  # a stalled consumer loses old snapshots, never blocks the link
            self._events.get_nowait()
        self._events.put_nowait(state)

    async def events(self) -> AsyncIterator[DeviceState]:
        """Unsolicited state snapshots (door opened, jam, battery, key returned)."""
        while True:
            yield await self._events.get()

    async def __aenter__(self) -> Driver:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()
