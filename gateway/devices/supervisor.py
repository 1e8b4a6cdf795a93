"""One supervisor per device: the link, the health poll, and what its states mean.

Link state machine (``connection = "keep"``, the default: measured by
``bench/device_connection.py``, an unlock on a kept session costs one link round trip
— p50 64 ms with 30 ms per frame — against 490 ms when connecting on demand, and only a
kept link hears the door open, a jam or the key taken when it happens; docs/devices.md §5)::

    connecting ──ok (connect + info + refresh)──► online ──link lost / no answer──► offline
        ▲                                           │ every health_interval: refresh │
        └──────── capped, jittered backoff ◄────────┴────────────────────────────────┘

``device.online`` is emitted when the device has answered a refresh after a
(re)connect — the refresh *is* the reconciliation: whatever changed while the link
was down (door opened, bolt turned by hand, battery drained) comes out as ordinary
state events. ``device.offline`` is emitted once per outage, with the reason.
An unpaired device is not retried fast (every ``reconnect_max``); pairing it with
``lockgw pair`` while the gateway runs brings it online at the next attempt.

With ``connection = "on_demand"`` the supervisor connects for each command and each
health poll and disconnects after; notifications (door opened) are seen only at polls —
and whenever the driver's :meth:`~drivers.base.Driver.wakeups` says the device has news
(a Nuki's advertisement), which makes the supervisor poll at once. Unless the config
sets them, ``connection`` and ``health_interval`` are the driver's defaults
(``Driver.default_connection`` / ``default_health_interval``: a Nuki is on demand,
polled every 30 minutes, woken by its beacon).

Every state snapshot, whether it is the answer to a command, a refresh or a
notification, goes through :meth:`Supervisor.apply`, which turns differences into
events (``lock.state``, ``keysafe.state``, ``battery``) and runs the two watches:
the door left open and the key not returned.

:meth:`Supervisor.problems` is what is wrong with the device right now, in the words
of the visit problems (``lock_jammed``, ``left_unlocked``, ``door_left_open``,
``key_not_returned``): published with its retained state, so a dashboard shows a
problem for as long as it lasts, not only the event that began it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Literal

import structlog

from drivers.base import Driver
from gateway.config import DeviceConfig
from gateway.devices.battery import BatteryLevel, BatteryTrend, classify
from gateway.devices.record import DeviceRecord
from gateway.events import EventSink
from protocols.device import Action, CompartmentState, DeviceKind, DeviceState, KeyState
from protocols.errors import (
    DeviceError,
    DeviceFailed,
    DeviceUnavailable,
    KeyFileError,
    PairingError,
)
from protocols.events import (
    BatteryEvent,
    DeviceOnlineEvent,
    DoorLeftOpenEvent,
    DoorState,
    EventBody,
    KeyNotReturnedEvent,
    KeysafeStateEvent,
    LockState,
    LockStateEvent,
    PairingEvent,
)

__all__ = ["Supervisor", "backoff_delay"]

log = structlog.get_logger("lockgw.devices")

#: how often the supervisor looks at the driver's link flag (a local attribute, no radio)
#: a safety net only: drivers report a lost link at once (Driver.on_link_lost)
LINK_CHECK = 5.0
#: a battery event is also sent when the level moved this many points since the last one
BATTERY_REPORT_STEP = 5

StateCallback = Callable[[str, DeviceState], Awaitable[None]]


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def backoff_delay(attempt: int, lo: float, hi: float, rng: random.Random | None = None) -> float:
    """Delay before reconnect ``attempt`` (1, 2, ...): doubling from ``lo``, capped at ``hi``,
    jittered into its upper half so many gateways do not retry in step."""
    base = min(hi, lo * 2 ** max(0, attempt - 1))
    return (rng or random).uniform(base / 2, base)


class Supervisor:
    """Keeps one device connected (or reaches it on demand) and reports what it does."""

    def __init__(
        self,
        cfg: DeviceConfig,
        driver: Driver,
        sink: EventSink,
        *,
        on_state: StateCallback,
        on_record: Callable[[], None],
        paired_at: Callable[[], str | None],
        record: DeviceRecord | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.driver = driver
        self.sink = sink
        self._on_state = on_state
        self._on_record = on_record
        self._paired_at = paired_at
        self._clock = clock
        self._log = log.bind(device=cfg.id, door=cfg.door)
        self._op = asyncio.Lock()  # one conversation with the device at a time
        self._apply_lock = asyncio.Lock()  # events leave in the order states arrived
        self._wake = asyncio.Event()  # poll now (after a failed command), or the link is gone
        driver.on_link_lost(self._wake.set)
        self._changed = asyncio.Event()  # a watch deadline may have moved
        self._needs_reset = False  # the link answered badly: drop it before trusting it again
        # what we know
        prev = record
        self.state: DeviceState | None = prev.state if prev else None
        self.info = prev.info if prev else None
        self.online: bool | None = None
        self.last_contact: float | None = prev.last_contact if prev else None
        self.error: str | None = None
        self.trend = BatteryTrend.from_json(prev.battery_samples if prev else [])
        self._battery_reported: tuple[int, BatteryLevel] | None = (
            (prev.battery, BatteryLevel(prev.battery_status))
            if prev and prev.battery is not None and prev.battery_status
            else None
        )
        self.days_left: float | None = prev.days_left if prev else None
        #: key ids the device held when last listed, and those this gateway did not make
        self.known_pairings: list[str] | None = prev.pairings if prev else None
        self.unknown_pairings: list[str] = list(prev.unknown_pairings) if prev else []
        # watches (a door or compartment open at the last snapshot is timed from now)
        now = clock()
        st = self.state
        self._door_opened_at: float | None = (
            now if st is not None and st.door is DoorState.OPEN else None
        )
        self._door_alerted = False
        self._compartment_opened_at: float | None = (
            now if st is not None and st.compartment is CompartmentState.OPEN else None
        )
        self._key_alerted = False
        #: a visit ended with the door shut but not relocked; cleared when the lock locks
        self._left_unlocked = False
        #: a state came from the device since the start (else ``state`` is the last run's)
        self._state_seen = False

    @property
    def id(self) -> str:
        return self.cfg.id

    @property
    def connection(self) -> str:
        """``keep`` or ``on_demand``: the config's, else the driver's default."""
        if "connection" in self.cfg.model_fields_set:
            return self.cfg.connection
        return self.driver.default_connection

    @property
    def health_interval(self) -> float:
        """Seconds between health polls: the config's, else the driver's default."""
        if "health_interval" in self.cfg.model_fields_set:
            return self.cfg.health_interval
        return self.driver.default_health_interval

    @property
    def kind(self) -> DeviceKind:
        return self.driver.kind

    # -- the record ------------------------------------------------------------------------
    def record(self) -> DeviceRecord:
        battery = self.state.battery if self.state else None
        status = None
        if battery is not None and self.state is not None:
            status = classify(
                battery,
                low=self.cfg.battery_low,
                critical=self.cfg.battery_critical,
                device_flag=self.state.battery_critical,
            ).value
        return DeviceRecord(
            id=self.cfg.id,
            door=self.cfg.door,
            driver=self.cfg.driver,
            address=self.cfg.address,
            kind=self.driver.kind,
            info=self.info,
            paired_at=self._paired_at(),
            online=self.online,
            connected=self.driver.is_connected,
            last_contact=self.last_contact,
            state=self.state,
            battery=battery,
            battery_status=status,
            days_left=self.days_left,
            battery_samples=self.trend.to_json(),
            pairings=self.known_pairings,
            unknown_pairings=self.unknown_pairings,
            error=self.error
            or (
                "the lock is jammed; check the door and the bolt"
                if self.state is not None and self.state.lock is LockState.JAMMED
                else None
            ),
        )

    def problems(self) -> list[str]:
        """What is wrong right now (empty when nothing is), in a fixed order."""
        st = self.state
        out: list[str] = []
        if st is not None and st.lock is LockState.JAMMED:
            out.append("lock_jammed")
        if self._left_unlocked:
            out.append("left_unlocked")
        if self._door_alerted and self._door_opened_at is not None:
            out.append("door_left_open")
        if (
            self._key_alerted
            and self._compartment_opened_at is not None
            and (st is None or st.key is not KeyState.PRESENT)
        ):
            out.append("key_not_returned")
        return out

    def mark_left_unlocked(self) -> None:
        """A visit ended with the door shut but not relocked (``gateway.visits``): a problem
        until the lock reports ``locked``. Before the lock was reached since the start, the
        state held is the last run's (saved now and then, maybe before the last unlock):
        it does not count."""
        if self.state is not None and self.state.lock is LockState.LOCKED and self._state_seen:
            return
        self._left_unlocked = True
        self._on_record()

    # -- events ----------------------------------------------------------------------------
    async def _emit(self, body: EventBody) -> None:
        try:
            await self.sink.emit(body)
        except Exception as exc:  # the journal reports its own failures; supervision goes on
            self._log.error("devices.emit_failed", type=body.type, error=str(exc))

    async def _set_online(self) -> None:
        self.error = None
        if self.online is not True:
            self.online = True
            self._log.info("device.online")
            await self._emit(
                DeviceOnlineEvent(type="device.online", device=self.id, door=self.cfg.door)
            )
        self._on_record()

    async def _set_offline(self, reason: str) -> None:
        self.error = reason
        if self.online is not False:
            self.online = False
            self._log.warning("device.offline", reason=reason)
            await self._emit(
                DeviceOnlineEvent(
                    type="device.offline", device=self.id, door=self.cfg.door, reason=reason
                )
            )
        self._on_record()

    # -- states ----------------------------------------------------------------------------
    async def apply(self, new: DeviceState) -> None:
        """Take one snapshot from the device: events for what changed, watches, battery."""
        async with self._apply_lock:
            now = self._clock()
            self.last_contact = now
            old = self.state
            self.state = new
            self._state_seen = True
            door = self.cfg.door
            if new.kind is DeviceKind.LOCK:
                if new.lock is LockState.LOCKED:
                    self._left_unlocked = False
                if old is None or (old.lock, old.door) != (new.lock, new.door):
                    await self._emit(
                        LockStateEvent(
                            device=self.id,
                            door=door,
                            lock=new.lock or LockState.UNKNOWN,
                            door_state=new.door,
                        )
                    )
                if new.door is DoorState.OPEN and (old is None or old.door is not DoorState.OPEN):
                    self._door_opened_at, self._door_alerted = now, False
                elif new.door is not DoorState.OPEN:
                    self._door_opened_at = None
            else:
                if old is None or (old.compartment, old.key) != (new.compartment, new.key):
                    await self._emit(
                        KeysafeStateEvent(
                            device=self.id,
                            door=door,
                            compartment=(new.compartment or CompartmentState.UNKNOWN).value,
                            key=(new.key or KeyState.UNKNOWN).value,
                        )
                    )
                opened = new.compartment is CompartmentState.OPEN and (
                    old is None or old.compartment is not CompartmentState.OPEN
                )
                if opened:
                    self._compartment_opened_at, self._key_alerted = now, False
                elif (
                    new.key is KeyState.PRESENT
                    and new.compartment is not CompartmentState.OPEN
                ):
                    self._compartment_opened_at = None
            if new.battery is not None:
                await self._battery(now, new)
            self._changed.set()
            if old != new:
                await self._on_state(self.id, new)
            self._on_record()

    async def _battery(self, now: float, st: DeviceState) -> None:
        assert st.battery is not None
        level = st.battery
        self.trend.add(now, level)
        self.days_left = self.trend.days_left(level)
        status = classify(
            level,
            low=self.cfg.battery_low,
            critical=self.cfg.battery_critical,
            device_flag=st.battery_critical,
        )
        last = self._battery_reported
        if (
            last is not None
            and last[1] is status
            and abs(last[0] - level) < BATTERY_REPORT_STEP
        ):
            return
        self._battery_reported = (level, status)
        if status is not BatteryLevel.OK:
            self._log.warning("device.battery", level=level, status=status.value,
                              days_left=self.days_left)
        await self._emit(
            BatteryEvent(
                device=self.id,
                door=self.cfg.door,
                level=level,
                low=status is not BatteryLevel.OK,
                critical=status is BatteryLevel.CRITICAL,
                days_left=self.days_left,
            )
        )

    # -- watches ---------------------------------------------------------------------------
    def _next_deadline(self) -> float | None:
        out: list[float] = []
        if self._door_opened_at is not None and not self._door_alerted:
            out.append(self._door_opened_at + self.cfg.door_left_open_after)
        if self._compartment_opened_at is not None and not self._key_alerted:
            out.append(self._compartment_opened_at + self.cfg.key_not_returned_after)
        return min(out) if out else None

    async def check_watches(self) -> None:
        now = self._clock()
        opened = self._door_opened_at
        if (
            opened is not None
            and not self._door_alerted
            and now - opened >= self.cfg.door_left_open_after
        ):
            self._door_alerted = True
            self._on_record()  # a problem now (Supervisor.problems)
            self._log.warning("device.door_left_open", seconds=round(now - opened))
            await self._emit(
                DoorLeftOpenEvent(
                    device=self.id,
                    door=self.cfg.door,
                    opened_at=_iso(opened),
                    seconds=round(now - opened),
                )
            )
        opened = self._compartment_opened_at
        if (
            opened is not None
            and not self._key_alerted
            and now - opened >= self.cfg.key_not_returned_after
        ):
            self._key_alerted = True
            self._on_record()
            key = self.state.key if self.state else None
            if key is not KeyState.PRESENT:
                self._log.warning("device.key_not_returned", minutes=(now - opened) / 60)
                await self._emit(
                    KeyNotReturnedEvent(
                        device=self.id,
                        door=self.cfg.door,
                        opened_at=_iso(opened),
                        minutes=int((now - opened) // 60),
                    )
                )

    async def _watch(self) -> None:
        while True:
            deadline = self._next_deadline()
            self._changed.clear()
            timeout = None if deadline is None else max(0.0, deadline - self._clock())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._changed.wait()
            await self.check_watches()

    # -- talking to the device -------------------------------------------------------------
    async def _bounded(self, what: str, aw: Awaitable[DeviceState]) -> DeviceState:
        try:
            async with asyncio.timeout(self.cfg.command_timeout):
                return await aw
        except TimeoutError as exc:
            raise DeviceUnavailable(
                self.id, f"{what}: no answer in {self.cfg.command_timeout:g} s"
            ) from exc

    async def _connect_locked(self) -> None:
        """Connect, read what the device is, refresh (= reconcile). Caller holds ``_op``.

        Pairing keys that cannot be used (a damaged key file) are a :class:`PairingError`
        like no keys at all: the device is offline with a reason that says to pair it
        again, and commands fail at once with ``device_unavailable``."""
        try:
            if not self.driver.is_paired:
                raise PairingError(self.id, f"not paired; run: lockgw pair --config F {self.id}")
            if not self.driver.is_connected:
                await self.driver.connect()
        except KeyFileError as exc:
            raise PairingError(self.id, f"pairing keys {exc.path}: {exc.problem}") from exc
        async with asyncio.timeout(self.cfg.command_timeout):
            self.info = await self.driver.device_info()
        state = await self.driver.refresh()
        await self.apply(state)
        await self._set_online()
        await self._check_pairings()

    async def _check_pairings(self) -> None:
        """List the device's pairings (if its driver can) and journal what changed: this
        gateway's new pairing (``device.paired``), one it did not make
        (``device.pairing_unknown``, a warning until removed), one gone
        (``device.pairing_removed``). Caller holds ``_op``."""
        async with asyncio.timeout(self.cfg.command_timeout):
            slots = await self.driver.pairings()
        if slots is None:
            return
        known = set(self.known_pairings or [])
        now = [s.key_id for s in slots]
        for slot in slots:
            if slot.key_id in known:
                continue
            if slot.own:
                self._log.info("device.paired", key_id=slot.key_id)
                kind: Literal["device.paired", "device.pairing_unknown"] = "device.paired"
            else:
                self._log.warning("device.pairing_unknown", key_id=slot.key_id)
                kind = "device.pairing_unknown"
            await self._emit(
                PairingEvent(type=kind, device=self.id, door=self.cfg.door, key_id=slot.key_id)
            )
        for gone in sorted(known - set(now)):
            self._log.warning("device.pairing_removed", key_id=gone)
            await self._emit(
                PairingEvent(
                    type="device.pairing_removed", device=self.id, door=self.cfg.door, key_id=gone
                )
            )
        self.known_pairings = now
        self.unknown_pairings = [s.key_id for s in slots if not s.own]
        self._on_record()

    async def _drop_link(self) -> None:
        with contextlib.suppress(DeviceError, TimeoutError, OSError):
            async with asyncio.timeout(self.cfg.command_timeout):
                await self.driver.disconnect()

    async def _failed(self, exc: DeviceError) -> None:
        """A conversation failed: unreachable → offline and (in the link loop) a fresh link;
        refused → note it and look at the device again soon (a jam shows in its state).
        Never waits for the device: the caller's error must leave within its bound."""
        if isinstance(exc, DeviceUnavailable | PairingError):
            self._needs_reset = True
            await self._set_offline(exc.detail or exc.reason.value)
        else:
            self.error = exc.detail or exc.reason.value
            self._on_record()
        self._wake.set()

    async def _operate(
        self, what: str, op: Callable[[], Awaitable[DeviceState]]
    ) -> DeviceState:
        """One device operation: serialised, connected first, bounded by ``command_timeout``
        from the call; failures recorded and raised as DeviceUnavailable / DeviceFailed."""
        try:
            async with asyncio.timeout(self.cfg.command_timeout):
                async with self._op:
                    try:
                        if not self.driver.is_connected:
                            await self._connect_locked()
                        state = await op()
                    finally:
                        if self.connection == "on_demand":
                            await self._drop_link()
        except TimeoutError:
            exc: DeviceError = DeviceUnavailable(
                self.id, f"{what}: no answer in {self.cfg.command_timeout:g} s"
            )
            await self._failed(exc)
            raise exc from None
        except PairingError as err:
            await self._failed(err)
            raise DeviceUnavailable(self.id, err.detail) from err
        except DeviceError as err:
            await self._failed(err)
            raise
        except asyncio.CancelledError:
            # the caller gave up first (the door's own deadline, a shutdown): the command
            # may have reached the device and moved it — look at it again at once, so the
            # state it is really in gets journaled (the link loop refreshes when woken)
            self._wake.set()
            raise
        await self.apply(state)
        return state

    async def execute(self, action: Action) -> DeviceState:
        """Do ``action`` now: serialised, bounded by ``command_timeout`` from the call."""
        state = await self._operate(action.value, lambda: self.driver.execute(action))
        if action is not Action.OPEN and state.lock is LockState.JAMMED:
            jammed = DeviceFailed(self.id, f"{action.value}: the lock is jammed")
            await self._failed(jammed)
            raise jammed
        await self._set_online()
        return state

    async def refresh(self) -> DeviceState:
        state = await self._operate("refresh", self.driver.refresh)
        await self._set_online()
        return state

    # -- the long-running parts ------------------------------------------------------------
    async def run(self) -> None:
        """The supervisor's tasks: link keeping, notifications, watches. Cancel to stop."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._watch())
            tg.create_task(self._notifications())
            if self.connection == "keep":
                tg.create_task(self._keep())
            else:
                tg.create_task(self._poll_on_demand())
                tg.create_task(self._wakeups())

    async def _notifications(self) -> None:
        async for state in self.driver.events():
            await self.apply(state)
            if self.online is False and self.driver.is_connected:
                await self._set_online()

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when a failed command asks for a look."""
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    async def _keep(self) -> None:
        attempt = 0
        while True:
            if self._needs_reset:
                self._needs_reset = False
                async with self._op:
                    await self._drop_link()
            if not self.driver.is_connected:
                try:
                    async with asyncio.timeout(self.cfg.command_timeout * 2):
                        async with self._op:
                            await self._connect_locked()
                    attempt = 0
                except PairingError as exc:
                    await self._failed(exc)
                    await self._sleep(self.cfg.reconnect_max)
                    continue
                except (DeviceError, TimeoutError) as exc:
                    err = exc if isinstance(exc, DeviceError) else DeviceUnavailable(
                        self.id, f"connect: no answer in {self.cfg.command_timeout:g} s"
                    )
                    await self._failed(err)
                    attempt += 1
                    delay = backoff_delay(attempt, self.cfg.reconnect_min, self.cfg.reconnect_max)
                    self._log.info("device.reconnect_in", seconds=round(delay, 2), attempt=attempt)
                    await asyncio.sleep(delay)
                    continue
            # connected: watch the link; poll once the device has been quiet for
            # health_interval (a command or notification counts as contact, so a busy
            # device is not polled and a command rarely waits behind a poll), or at once
            # when a failed command asks for a look
            self._wake.clear()
            while self.driver.is_connected and not self._wake.is_set():
                quiet_until = (self.last_contact or 0.0) + self.health_interval
                remaining = quiet_until - self._clock()
                if remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(LINK_CHECK, remaining)):
                        await self._wake.wait()
            if not self.driver.is_connected:
                await self._set_offline("link lost")
                continue
            if self._needs_reset:
                continue
            with contextlib.suppress(DeviceError):
                await self.refresh()  # failures are recorded by refresh itself
            with contextlib.suppress(DeviceError, TimeoutError):
                async with self._op:
                    await self._check_pairings()  # a pairing made in a window since

    async def _poll_on_demand(self) -> None:
        attempt = 0
        while True:
            try:
                await self.refresh()
                attempt = 0
                await self._sleep(self.health_interval)
            except PairingError:
                await self._sleep(self.cfg.reconnect_max)
            except DeviceError:
                attempt += 1
                await self._sleep(
                    min(
                        self.health_interval,
                        backoff_delay(attempt, self.cfg.reconnect_min, self.cfg.reconnect_max),
                    )
                )

    async def _wakeups(self) -> None:
        """The device says it has news (an on-demand device's advertisement): poll now."""
        while True:
            try:
                async for _ in self.driver.wakeups():
                    self._log.info("device.wakeup")
                    self._wake.set()
            except DeviceError as exc:
                self._log.warning("devices.wakeups_failed", error=exc.detail or str(exc))
            except Exception as exc:  # a scan that cannot run (adapter gone): try again later
                self._log.warning("devices.wakeups_failed", error=str(exc) or type(exc).__name__)
            await asyncio.sleep(self.cfg.reconnect_max)

    async def close(self) -> None:
        """Let go of the device (bounded)."""
        await self._drop_link()
