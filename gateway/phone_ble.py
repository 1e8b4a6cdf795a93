"""The CONTRACT §3 exchange as a BLE GATT peripheral on the hub (BlueZ over D-Bus).

``[phone_link] ble = true`` makes ``lockgw run`` serve phones here, on ``[bluetooth]
adapter``. Promises:

- **No silent no-op.** BlueZ not running, the adapter missing, or this user not allowed
  to use BlueZ stops ``lockgw run`` with one line (``PhoneBleUnavailable``, exit status
  69) and ``lockgw check-config`` names the same problem (:func:`bluez_problems`).
- **One session per central.** BlueZ names the central (its ``Device1`` object) in the
  ``device`` option of every ``WriteValue`` and ``ReadValue`` it passes us, so every
  phone has its own session: its own reassembly, its own challenge, its own result.
  Nothing of one phone's exchange goes to another: the gateway never notifies (BlueZ
  would send a notification to every subscribed central); a phone *reads* its answers
  from TX, and BlueZ answers each read for the central that asked. Phones at once
  proceed in parallel (commands to one device are serialised by its driver).
- **Chunks follow each central's MTU**: the ``mtu`` option BlueZ passes with each write
  and read (BlueZ ≥ 5.62); without it, the ATT minimum of 23 — slow, never broken.
- **A phone that goes away frees everything at once**: BlueZ's ``Connected = false``
  (or the device object going) ends its session; a phone that stays connected but
  silent is ended by the step timeout. An attempt whose proof is in runs to its end
  anyway (:mod:`gateway.door`): the door moves and the attempt is journaled, the phone
  just does not hear it.
- **The adapter going away** (a USB dongle pulled, bluetoothd restarted) ends every
  session and marks the link down (``lockgw health`` says so); when the adapter is back
  the application and advertisement are registered again.
- **Quiet** (issue 17): no name, no fixed UUID in the air. The service and characteristic
  UUIDs are the site's own (:mod:`protocols.advert`, from the advertising key phones get in
  their bundle) and the advertised UUID changes every 15 minutes: the advertisement is
  registered again at each epoch's start. While ``[phone_link] accept_v1`` lets old phones
  in, the legacy service and the name ``lockgw`` are served too (a reload switching it
  registers the application again).

**Choice: BlueZ's GATT D-Bus API through ``dbus-fast``**, not ``bless``: bleak already
depends on dbus-fast on Linux (maintained, typed, fast); bless pulls in the unmaintained
``dbus-next``. The D-Bus objects are in :mod:`gateway._bluez_gatt`; the transport
(sessions, chunks) here; the frames' contents in :mod:`protocols.phone` and
:func:`gateway.phone_link.run_exchange` — the same exchange as the TCP link.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

import structlog
from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError

from gateway.phone_link import DoorHandler, run_exchange
from protocols.advert import ROTATION_S
from protocols.errors import FrameError, LockgwError
from protocols.phone import (
    ATT_MIN_MTU,
    PHONE_SERVICE_UUID,
    RX_CHAR_UUID,
    TX_CHAR_UUID,
    Reassembler,
    chunk,
)

__all__ = [
    "EX_UNAVAILABLE",
    "PHONE_SERVICE_UUID",
    "RX_CHAR_UUID",
    "TX_CHAR_UUID",
    "BleSessions",
    "BluezPhonePeripheral",
    "PhoneBleBusy",
    "PhoneBleStatus",
    "PhoneBleUnavailable",
    "bluez_problems",
]

log = structlog.get_logger("lockgw.phone_ble")

#: seconds between looks at the wall clock for the advertisement (a clock set by NTP)
CLOCK_LOOK: Final = 30.0
#: sysexits.h EX_UNAVAILABLE: ``lockgw run`` without the BlueZ it was told to use. Not
#: EX_CONFIG: systemd restarts the unit, so a dongle plugged in late or a bluetoothd
#: that starts after lockgw heals by itself.
EX_UNAVAILABLE: Final = 69
BLUEZ: Final = "org.bluez"
_ADAPTER: Final = "org.bluez.Adapter1"
_DEVICE: Final = "org.bluez.Device1"
_PROPS: Final = "org.freedesktop.DBus.Properties"
_OBJECTS: Final = "org.freedesktop.DBus.ObjectManager"
#: what the peripheral needs of the adapter (BlueZ ≥ 5.50 offers both on an LE adapter)
_NEEDED: Final = ("org.bluez.GattManager1", "org.bluez.LEAdvertisingManager1")
#: how long one call to BlueZ may take
CALL_TIMEOUT: Final = 5.0
#: frames a phone may have written ahead of the exchange (hello and proof are two)
_MAX_AHEAD: Final = 4


class PhoneBleUnavailable(LockgwError):
    """BlueZ or the adapter is not there (or not ours to use): the BLE phone link cannot
    start. The message is one line saying what to do."""


class PhoneBleBusy(LockgwError):
    """More centrals in an exchange at once than ``max_sessions``."""


def _address(device_path: str) -> str:
    """``/org/bluez/hci0/dev_AA_BB_CC_DD_EE_FF`` → ``AA:BB:CC:DD:EE:FF``."""
    tail = device_path.rsplit("/", 1)[-1]
    return tail[4:].replace("_", ":") if tail.startswith("dev_") else device_path


# -- the transport: sessions and chunks, no D-Bus -----------------------------------------
class _Session:
    def __init__(self, peer: str, mtu: int) -> None:
        self.peer = peer
        self.mtu = mtu
        self.reassembler = Reassembler()
        self.inbox: asyncio.Queue[bytes | BaseException] = asyncio.Queue()
        self.outbox: deque[bytes] = deque()
        self.changed = asyncio.Condition()
        self.last = b""  # the chunk last read (a Read Blob asks for its tail)
        self.done = False
        self.task: asyncio.Task[None] | None = None

    def put(self, item: bytes | BaseException) -> None:
        self.inbox.put_nowait(item)


class BleSessions:
    """Chunks in from centrals (:meth:`on_write`), chunks out to the central that reads
    (:meth:`on_read`), one :func:`run_exchange` per central. Transport only: no D-Bus
    here, so it is tested without BlueZ."""

    def __init__(
        self,
        handler: DoorHandler,
        *,
        step_timeout: float = 10.0,
        max_sessions: int = 16,
        read_wait: float | None = None,
    ) -> None:
        self.handler = handler
        self.step_timeout = step_timeout
        self.max_sessions = max_sessions
        #: how long a read waits for the central's next chunk before it answers empty
        #: ("nothing yet, read again"); well under BlueZ's 25 s for a D-Bus call
        self.read_wait = read_wait if read_wait is not None else min(step_timeout, 20.0)
        self._sessions: dict[str, _Session] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.served = 0

    @property
    def active(self) -> int:
        """Centrals with an exchange under way (or an answer not yet read)."""
        return len(self._sessions)

    def on_write(self, device: str, data: bytes, mtu: int | None = None) -> None:
        """One chunk from the central ``device`` (synchronous: chunks are taken in the
        order BlueZ hands them over). Raises :class:`PhoneBleBusy` when a new central
        would exceed ``max_sessions``."""
        session = self._sessions.get(device)
        if session is None or session.done:  # a new exchange on this link
            if session is None and len(self._sessions) >= self.max_sessions:
                log.warning("phone_ble.busy", peer=_address(device), sessions=len(self._sessions))
                raise PhoneBleBusy(f"{len(self._sessions)} phones in an exchange; try again")
            session = self._sessions[device] = _Session(device, mtu or ATT_MIN_MTU)
            session.task = asyncio.get_running_loop().create_task(self._run(session))
            self._tasks.add(session.task)
            session.task.add_done_callback(self._tasks.discard)
        if mtu:
            session.mtu = mtu
        try:
            frame = session.reassembler.add(data)
        except FrameError as exc:  # answered as a malformed frame, like a broken CBOR one
            log.info("phone_ble.bad_chunk", peer=_address(device), detail=exc.detail)
            session.reassembler = Reassembler()
            session.put(exc)
            return
        if frame is None:
            return
        if session.inbox.qsize() >= _MAX_AHEAD:  # a phone flooding frames
            log.info("phone_ble.flood", peer=_address(device))
            self._end(device, ConnectionResetError("too many frames ahead of the exchange"))
            return
        session.put(frame)

    async def on_read(self, device: str, mtu: int | None = None, offset: int = 0) -> bytes:
        """The next chunk of this central's answer; waits up to ``read_wait`` for one,
        then answers empty (nothing yet: read again). Only ever this central's chunks."""
        session = self._sessions.get(device)
        if session is None:
            return b""
        if mtu:
            session.mtu = mtu
        if offset:  # a Read Blob continuing the last chunk (the central's MTU shrank?)
            return session.last[offset:]
        async with session.changed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.read_wait):
                    await session.changed.wait_for(lambda: bool(session.outbox) or session.done)
            if not session.outbox:
                return b""
            session.last = session.outbox.popleft()
            session.changed.notify_all()
            return session.last

    def disconnected(self, device: str) -> None:
        """BlueZ says the central is gone: its session ends now."""
        if device in self._sessions:
            log.info("phone_ble.gone", peer=_address(device))
            self._end(device, ConnectionAbortedError("the phone disconnected"))

    def end_all(self, why: str) -> None:
        for device in list(self._sessions):
            self._end(device, ConnectionAbortedError(why))

    def _end(self, device: str, why: BaseException) -> None:
        session = self._sessions.pop(device, None)
        if session is not None:
            session.put(why)  # run_exchange's next receive raises it and the task ends

    async def _run(self, session: _Session) -> None:
        peer = f"ble:{_address(session.peer)}"

        async def recv() -> bytes:
            item = await session.inbox.get()
            if isinstance(item, BaseException):
                raise item
            return item

        async def send(data: bytes) -> None:
            parts = chunk(data, session.mtu)
            async with session.changed:
                session.outbox.extend(parts)
                session.changed.notify_all()

        try:
            await run_exchange(self.handler, recv, send, peer, self.step_timeout)
            self.served += 1
        except (TimeoutError, ConnectionError) as exc:
            log.info("phone_ble.dropped", peer=peer, why=type(exc).__name__, detail=str(exc))
        finally:
            async with session.changed:
                session.done = True
                session.changed.notify_all()
        try:  # the answer stays readable for a step, then the session goes
            async with asyncio.timeout(self.step_timeout), session.changed:
                await session.changed.wait_for(lambda: not session.outbox)
        except TimeoutError:
            log.info("phone_ble.unread", peer=peer, chunks=len(session.outbox))
        finally:
            if self._sessions.get(session.peer) is session:
                del self._sessions[session.peer]

    async def close(self) -> None:
        self.end_all("the gateway is stopping")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


# -- BlueZ ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PhoneBleStatus:
    adapter: str
    up: bool
    problem: str | None
    sessions: int
    served: int


async def _connect() -> MessageBus:
    try:
        async with asyncio.timeout(CALL_TIMEOUT):
            return await MessageBus(bus_type=BusType.SYSTEM).connect()
    except (OSError, ValueError, DBusError, TimeoutError) as exc:
        raise PhoneBleUnavailable(
            f"bluetooth: the system D-Bus cannot be reached ({exc or type(exc).__name__}); "
            "BlueZ needs it: is dbus running?"
        ) from exc


async def _call(  # noqa: PLR0917 - the fields of one D-Bus message
    bus: MessageBus, path: str, interface: str, member: str,
    signature: str = "", body: list[Any] | None = None, destination: str = BLUEZ,
) -> list[Any]:
    """One call; a BlueZ that is missing or refuses us becomes one line of advice."""
    async with asyncio.timeout(CALL_TIMEOUT):
        reply = await bus.call(Message(
            destination=destination, path=path, interface=interface, member=member,
            signature=signature, body=body or [],
        ))
    if reply is None:
        raise PhoneBleUnavailable(f"bluetooth: no answer from BlueZ to {member}")
    if reply.message_type == MessageType.ERROR:
        name = reply.error_name or ""
        detail = str(reply.body[0]) if reply.body else ""
        if name in {"org.freedesktop.DBus.Error.ServiceUnknown",
                    "org.freedesktop.DBus.Error.NameHasNoOwner"}:
            raise PhoneBleUnavailable(
                "bluetooth: BlueZ (bluetoothd) is not running on the system D-Bus; install "
                "bluez 5.50 or later and start it: systemctl enable --now bluetooth"
            )
        if name == "org.freedesktop.DBus.Error.AccessDenied":
            raise PhoneBleUnavailable(
                "bluetooth: this user may not use BlueZ (D-Bus AccessDenied); add it to the "
                "bluetooth group (docs/install.md) and start lockgw again"
            )
        raise DBusError(name or "org.bluez.Error.Failed", detail)
    return list(reply.body)


async def _adapters(bus: MessageBus) -> dict[str, dict[str, Any]]:
    """BlueZ's adapters: name → their interfaces."""
    (objects,) = await _call(bus, "/", _OBJECTS, "GetManagedObjects")
    return {
        path.rsplit("/", 1)[1]: interfaces
        for path, interfaces in objects.items()
        if _ADAPTER in interfaces
    }


def _adapter_problem(adapter: str, adapters: dict[str, dict[str, Any]], *, peripheral: bool) -> str | None:
    if adapter not in adapters:
        have = ", ".join(sorted(adapters)) or "none"
        return (
            f"bluetooth.adapter: BlueZ has no adapter {adapter} (it has: {have}); check "
            "`bluetoothctl list` and [bluetooth] adapter"
        )
    missing = [i for i in _NEEDED if i not in adapters[adapter]]
    if peripheral and missing:
        return (
            f"bluetooth.adapter: {adapter} cannot serve phones (no {', '.join(missing)}); it "
            "needs BlueZ 5.50 or later and a Bluetooth Low Energy adapter"
        )
    return None


async def bluez_problems(adapter: str, *, peripheral: bool = True) -> list[str]:
    """What keeps BlueZ's ``adapter`` from being used, one line each (empty: usable).
    ``peripheral``: the BLE phone link needs the adapter to advertise and serve GATT."""
    try:
        bus = await _connect()
    except PhoneBleUnavailable as exc:
        return [str(exc)]
    try:
        adapters = await _adapters(bus)
    except PhoneBleUnavailable as exc:
        return [str(exc)]
    except (DBusError, TimeoutError) as exc:
        return [f"bluetooth: BlueZ does not answer ({exc or type(exc).__name__})"]
    finally:
        bus.disconnect()
    problem = _adapter_problem(adapter, adapters, peripheral=peripheral)
    return [problem] if problem else []


class BluezPhonePeripheral:
    """``async with BluezPhonePeripheral(handler, adapter="hci0"): ...`` registers the
    GATT application and the advertisement on the adapter and serves phones until exit.
    Entering raises :class:`PhoneBleUnavailable` (one line) when it cannot."""

    APP_PATH = "/org/lockgw/phone"

    def __init__(
        self,
        handler: DoorHandler,
        *,
        advert_key: bytes,
        adapter: str = "hci0",
        step_timeout: float = 10.0,
        legacy: bool = False,
    ) -> None:
        self.advert_key = advert_key
        self.legacy = legacy
        self._adv_epoch: int | None = None  # the epoch of the advertisement registered
        self.adapter = adapter
        self.adapter_path = f"/org/bluez/{adapter}"
        self.sessions = BleSessions(handler, step_timeout=step_timeout)
        self.up = False
        self.problem: str | None = None
        self._bus: MessageBus | None = None
        self._objects: Any = None  # gateway._bluez_gatt.PhoneApp
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()

    def status(self) -> PhoneBleStatus:
        return PhoneBleStatus(
            adapter=self.adapter, up=self.up, problem=self.problem,
            sessions=self.sessions.active, served=self.sessions.served,
        )

    async def __aenter__(self) -> BluezPhonePeripheral:
        from gateway._bluez_gatt import PhoneApp  # D-Bus objects: only when BLE is on

        self._bus = bus = await _connect()
        try:
            adapters = await _adapters(bus)
            if problem := _adapter_problem(self.adapter, adapters, peripheral=True):
                raise PhoneBleUnavailable(problem)
            self._objects = PhoneApp(
                self.APP_PATH, self.sessions, self.advert_key, legacy=self.legacy
            )
            self._objects.export(bus)
            bus.add_message_handler(self._on_signal)
            for rule in (
                f"type='signal',sender='{BLUEZ}',interface='{_PROPS}',"
                f"member='PropertiesChanged',path_namespace='{self.adapter_path}'",
                f"type='signal',sender='{BLUEZ}',interface='{_OBJECTS}'",
            ):
                await _call(bus, "/org/freedesktop/DBus", "org.freedesktop.DBus", "AddMatch",
                            "s", [rule], destination="org.freedesktop.DBus")
            await self._register()
            self._spawn(self._rotate())
        except BaseException as exc:
            bus.disconnect()
            self._bus = None
            if isinstance(exc, (DBusError, TimeoutError)):
                raise PhoneBleUnavailable(
                    f"bluetooth: {self.adapter} refused the phone peripheral "
                    f"({exc or type(exc).__name__})"
                ) from exc
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.sessions.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        bus, self._bus = self._bus, None
        if bus is None:
            return
        if self.up:
            await self._unregister(bus)
        bus.disconnect()

    async def _advertise(self, bus: MessageBus, on: bool) -> None:
        if on:
            epoch = self._objects.epoch()  # what BlueZ reads now, at registration
            await _call(bus, self.adapter_path, "org.bluez.LEAdvertisingManager1",
                        "RegisterAdvertisement", "oa{sv}", [self._objects.adv_path, {}])
            self._adv_epoch = epoch
        else:
            await _call(bus, self.adapter_path, "org.bluez.LEAdvertisingManager1",
                        "UnregisterAdvertisement", "o", [self._objects.adv_path])

    async def _unregister(self, bus: MessageBus) -> None:
        """Take the advertisement and the application back (whatever BlueZ says)."""
        with contextlib.suppress(Exception):
            await self._advertise(bus, False)
        with contextlib.suppress(Exception):
            await _call(bus, self.adapter_path, "org.bluez.GattManager1",
                        "UnregisterApplication", "o", [self.APP_PATH])

    async def _register(self) -> None:
        """Power the adapter if it is off, register the application and advertise."""
        bus = self._bus
        assert bus is not None
        async with self._lock:
            (powered,) = await _call(bus, self.adapter_path, _PROPS, "Get", "ss", [_ADAPTER, "Powered"])
            if not powered.value:
                log.info("phone_ble.powering_on", adapter=self.adapter)
                await _call(bus, self.adapter_path, _PROPS, "Set", "ssv",
                            [_ADAPTER, "Powered", Variant("b", True)])
            await _call(bus, self.adapter_path, "org.bluez.GattManager1", "RegisterApplication",
                        "oa{sv}", [self.APP_PATH, {}])
            await self._advertise(bus, True)
            self.up, self.problem = True, None
        log.info("phone_ble.advertising", adapter=self.adapter)

    async def _rotate(self) -> None:
        """Register the advertisement again when its epoch's UUID changes (BlueZ reads an
        advertisement's properties once, at registration). The wall clock is looked at
        every :data:`CLOCK_LOOK` seconds too: a hub without a clock battery starts with a
        wrong time, and when NTP sets it the advertisement follows within that, not only
        at the end of the epoch it began with."""
        while True:
            left = (self._objects.epoch() + 1) * ROTATION_S - time.time()
            await asyncio.sleep(min(CLOCK_LOOK, max(0.05, left + 0.01)))
            if not self.up or self._bus is None or self._objects.epoch() == self._adv_epoch:
                continue
            try:
                async with self._lock:
                    # after a failed try nothing may be registered: that is no reason not
                    # to register again (the next look tries again while it fails)
                    with contextlib.suppress(DBusError, TimeoutError):
                        await self._advertise(self._bus, False)
                    await self._advertise(self._bus, True)
                log.debug("phone_ble.advert_rotated", adapter=self.adapter, epoch=self._adv_epoch)
            except (DBusError, TimeoutError) as exc:
                log.warning("phone_ble.advert_rotate_failed", adapter=self.adapter, error=str(exc))

    async def set_legacy(self, legacy: bool) -> None:
        """``[phone_link] accept_v1`` changed on reload: serve (or stop serving) the v1
        service and name — the application is registered again."""
        from gateway._bluez_gatt import PhoneApp

        if legacy == self.legacy or self._bus is None:
            self.legacy = legacy
            return
        bus = self._bus
        async with self._lock:
            if self.up:
                await self._unregister(bus)
            self._objects.unexport(bus)
            self.legacy = legacy
            self._objects = PhoneApp(self.APP_PATH, self.sessions, self.advert_key, legacy=legacy)
            self._objects.export(bus)
        log.info("phone_ble.legacy", adapter=self.adapter, legacy=legacy)
        if self.up:
            await self._register_again()

    async def _register_again(self) -> None:
        try:
            await self._register()
        except (PhoneBleUnavailable, DBusError, TimeoutError) as exc:
            self.problem = f"{self.adapter} is back but refused the phone peripheral ({exc})"
            log.error("phone_ble.register_failed", adapter=self.adapter, error=str(exc))

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as the peripheral's own task (ended with it)."""
        self._spawn(coro)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_signal(self, msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL:
            return
        path = msg.path or ""
        if msg.member == "PropertiesChanged" and path.startswith(self.adapter_path + "/dev_"):
            interface, changed, _ = msg.body
            if interface == _DEVICE and "Connected" in changed and not changed["Connected"].value:
                self.sessions.disconnected(path)
        elif msg.member == "InterfacesRemoved":
            gone, interfaces = msg.body
            if _DEVICE in interfaces and gone.startswith(self.adapter_path + "/"):
                self.sessions.disconnected(gone)
            elif _ADAPTER in interfaces and gone == self.adapter_path:
                self.up = False
                self.problem = f"adapter {self.adapter} is gone (unplugged, or bluetoothd stopped)"
                log.error("phone_ble.adapter_gone", adapter=self.adapter)
                self.sessions.end_all("the adapter is gone")
        elif msg.member == "InterfacesAdded":
            added, interfaces = msg.body
            if _ADAPTER in interfaces and added == self.adapter_path and not self.up:
                log.info("phone_ble.adapter_back", adapter=self.adapter)
                self._spawn(self._register_again())
