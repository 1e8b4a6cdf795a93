"""The CONTRACT §3 exchange as a BLE GATT peripheral on the hub (BlueZ over D-Bus).

**Choice: BlueZ's GATT D-Bus API through ``dbus-fast``**, not ``bless``. bleak already
depends on dbus-fast on Linux (maintained, typed, fast); bless pulls in the unmaintained
``dbus-next``. So the peripheral adds no dependency at all; it needs only BlueZ ≥ 5.50
and the ``bluetooth`` group (docs/install.md).

GATT layout (UUIDs in ``protocols/README.md``):

* service ``PHONE_SERVICE_UUID`` (primary, advertised with the site-neutral name ``lockgw``)
* ``RX`` characteristic (write, write-without-response): the phone writes chunks of its frames
* ``TX`` characteristic (notify): the gateway notifies chunks of its frames

Chunks are ``protocols.phone.chunk``: one header byte (first / last / 6-bit counter)
and up to MTU − 4 bytes of the CBOR frame. A session is one central (BlueZ passes the
``device`` object path in every write); it runs the very same
:func:`gateway.phone_link.run_exchange` as the TCP link, with the same step timeouts.

BlueZ sends a characteristic's notifications to every subscribed central, so the
peripheral runs one exchange at a time (others wait their turn, each bounded by the
step timeout); an exchange takes a few hundred milliseconds. Where no adapter exists
(a CI machine, a container) :class:`BluezPhonePeripheral` raises
:class:`PhoneBleUnavailable` at start and the gateway runs without it, saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import structlog

from gateway.phone_link import DoorHandler, run_exchange
from protocols.errors import FrameError, LockgwError
from protocols.phone import Reassembler, chunk

__all__ = [
    "PHONE_SERVICE_UUID",
    "RX_CHAR_UUID",
    "TX_CHAR_UUID",
    "BleSessions",
    "BluezPhonePeripheral",
    "PhoneBleUnavailable",
]

log = structlog.get_logger("lockgw.phone_ble")

PHONE_SERVICE_UUID = "8e5c0001-6c6f-636b-6777-000000000001"
RX_CHAR_UUID = "8e5c0002-6c6f-636b-6777-000000000001"
TX_CHAR_UUID = "8e5c0003-6c6f-636b-6777-000000000001"
DEFAULT_MTU = 185  # what current phones negotiate; chunks adapt to the reported MTU


class PhoneBleUnavailable(LockgwError):
    """No Bluetooth adapter / BlueZ here: the BLE phone link cannot start."""


Notify = Callable[[bytes], Awaitable[None]]


class _Session:
    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.frames: asyncio.Queue[bytes] = asyncio.Queue(maxsize=4)
        self.reassembler = Reassembler()
        self.task: asyncio.Task[None] | None = None


class BleSessions:
    """Transport-independent core: chunks in from centrals, chunks out through ``notify``."""

    def __init__(
        self, handler: DoorHandler, notify: Notify, *, step_timeout: float = 10.0, mtu: int = DEFAULT_MTU
    ) -> None:
        self.handler = handler
        self.notify = notify
        self.step_timeout = step_timeout
        self.mtu = mtu
        self._sessions: dict[str, _Session] = {}
        self._turn = asyncio.Lock()  # one exchange at a time (notifications reach all centrals)

    async def on_write(self, peer: str, data: bytes) -> None:
        session = self._sessions.get(peer)
        if session is None:
            session = self._sessions[peer] = _Session(peer)
            session.task = asyncio.create_task(self._run(session))
        try:
            frame = session.reassembler.add(data)
        except FrameError as exc:
            log.info("phone_ble.bad_chunk", peer=peer, detail=exc.detail)
            await self._drop(peer)
            return
        if frame is not None:
            try:
                session.frames.put_nowait(frame)
            except asyncio.QueueFull:  # a phone flooding frames
                await self._drop(peer)

    async def _run(self, session: _Session) -> None:
        async def recv() -> bytes:
            return await session.frames.get()

        async def send(data: bytes) -> None:
            for part in chunk(data, self.mtu):
                await self.notify(part)

        try:
            async with self._turn:
                await run_exchange(self.handler, recv, send, f"ble:{session.peer}", self.step_timeout)
        except (TimeoutError, ConnectionError) as exc:
            log.info("phone_ble.dropped", peer=session.peer, why=type(exc).__name__)
        finally:
            if self._sessions.get(session.peer) is session:
                del self._sessions[session.peer]

    async def _drop(self, peer: str) -> None:
        session = self._sessions.pop(peer, None)
        if session is not None and session.task is not None:
            session.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await session.task

    async def close(self) -> None:
        for peer in list(self._sessions):
            await self._drop(peer)


class BluezPhonePeripheral:
    """``async with BluezPhonePeripheral(handler): ...`` — registers the GATT app and advertises."""

    APP_PATH = "/org/lockgw/phone"

    def __init__(self, handler: DoorHandler, *, adapter: str = "hci0", step_timeout: float = 10.0) -> None:
        self.handler = handler
        self.adapter_path = f"/org/bluez/{adapter}"
        self.step_timeout = step_timeout
        self._bus: Any = None
        self._sessions: BleSessions | None = None

    async def __aenter__(self) -> BluezPhonePeripheral:
        try:
            from dbus_fast import BusType
            from dbus_fast.aio import MessageBus
        except ImportError as exc:  # pragma: no cover - dbus-fast comes with bleak on Linux
            raise PhoneBleUnavailable("dbus-fast is not installed") from exc
        try:
            self._bus = await asyncio.wait_for(MessageBus(bus_type=BusType.SYSTEM).connect(), 5)
            intro = await self._bus.introspect("org.bluez", self.adapter_path)
        except Exception as exc:
            if self._bus is not None:
                self._bus.disconnect()
            raise PhoneBleUnavailable(
                f"no Bluetooth adapter at {self.adapter_path} ({type(exc).__name__}); "
                "the BLE phone link is off, the loopback link still works"
            ) from exc
        from gateway._bluez_gatt import register_phone_app

        self._sessions = BleSessions(self.handler, self._notify, step_timeout=self.step_timeout)
        self._notify_impl = await register_phone_app(
            self._bus, self.adapter_path, intro, self.APP_PATH, self._sessions
        )
        log.info("phone_ble.advertising", adapter=self.adapter_path)
        return self

    async def _notify(self, data: bytes) -> None:
        await self._notify_impl(data)

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._sessions is not None:
            await self._sessions.close()
        if self._bus is not None:
            self._bus.disconnect()
