"""The gateway's devices: one :class:`Supervisor` each, routed by door and action.

The door service and the app use exactly::

    async with DeviceManager.from_config(cfg, sink) as devices:
        state = await devices.execute("front", Action.UNLOCK)   # DeviceUnavailable / DeviceFailed
        devices.device_for("front", Action.OPEN)                # -> "front-keysafe"
        devices.states(); devices.inventory(); devices.records()
        devices.on_change(visits.on_state)
        async for device_id, state in devices.changes(): ...
        ids = await devices.touched()        # whose record changed (one reader)
        devices.retained_state(i); devices.availability(i)   # what MQTT keeps (retained)

Entering starts the supervisors and returns at once: a device that is off does not
delay the gateway; it is reported ``device.offline`` and retried in the background.
Leaving cancels them, disconnects every device (bounded) and writes the snapshot.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any

import structlog

from drivers.base import Driver, SecretStore
from drivers.registry import get_driver
from gateway.config import Config, DeviceConfig
from gateway.devices.record import DeviceRecord, StateFile
from gateway.devices.secrets import FileSecretStore
from gateway.devices.supervisor import Supervisor
from gateway.events import EventSink
from gateway.health import DeviceHealth
from protocols.device import Action, Capability, DeviceState
from protocols.errors import DeviceUnavailable
from protocols.mqtt import DeviceAvailability, DeviceStatePayload

__all__ = ["DeviceManager", "DriverLookup", "make_driver"]

log = structlog.get_logger("lockgw.devices")

DriverLookup = Callable[[str], type[Driver]]
ChangeCallback = Callable[[str, DeviceState], Awaitable[None] | None]

#: the snapshot is rewritten at most this often (seconds); every change is in the next write
SNAPSHOT_INTERVAL = 0.5


def _default_lookup(name: str) -> type[Driver]:
    return get_driver(name)


def make_driver(
    dev: DeviceConfig,
    secrets: SecretStore,
    lookup: DriverLookup | None = None,
    *,
    adapter: str = "hci0",
) -> Driver:
    """The driver for one configured device (``UnknownDriver`` if its name is not registered);
    BLE addresses are reached through BlueZ on ``adapter`` (``[bluetooth] adapter``)."""
    cls = (lookup or _default_lookup)(dev.driver)
    driver = cls(
        dev.id, dev.address, secrets=secrets, options=dev.options, timeout=dev.command_timeout
    )
    # set, not passed: a supplier's driver written before the adapter existed keeps working
    driver.adapter = adapter
    return driver


class DeviceManager:
    def __init__(
        self,
        devices: list[tuple[DeviceConfig, Driver]],
        sink: EventSink,
        *,
        state_file: StateFile | None = None,
        secrets: SecretStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sink = sink
        self.state_file = state_file
        self.secrets = secrets
        self._callbacks: list[ChangeCallback] = []
        self._subscribers: set[asyncio.Queue[tuple[str, DeviceState]]] = set()
        self._dirty = asyncio.Event()
        self._touched_ids: set[str] = set()
        self._touched_event = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        #: the snapshot being written off the loop, awaited before the last one at exit
        self._snapshot_job: asyncio.Future[None] | None = None
        _, previous = state_file.read() if state_file else (None, {})
        self.supervisors: dict[str, Supervisor] = {}
        for dev, driver in devices:
            self.supervisors[dev.id] = Supervisor(
                dev,
                driver,
                sink,
                on_state=self._state_changed,
                on_record=self._touch_for(dev.id),
                paired_at=self._paired_at_for(dev.id),
                record=previous.get(dev.id),
                clock=clock,
            )

    @classmethod
    def from_config(
        cls,
        cfg: Config,
        sink: EventSink,
        *,
        secrets: SecretStore | None = None,
        drivers: DriverLookup | None = None,
    ) -> DeviceManager:
        """Every ``[[devices]]`` entry with its registered driver; keys from ``secrets``
        (default: :class:`FileSecretStore` in the data dir); ``drivers`` replaces the
        registry lookup (tests)."""
        store = secrets if secrets is not None else FileSecretStore(cfg.site.data_dir)
        devices = [
            (d, make_driver(d, store, drivers, adapter=cfg.bluetooth.adapter)) for d in cfg.devices
        ]
        return cls(devices, sink, state_file=StateFile(cfg.site.data_dir), secrets=store)

    def _touch_for(self, device_id: str) -> Callable[[], None]:
        def touch() -> None:
            self._dirty.set()
            self._touched_ids.add(device_id)
            self._touched_event.set()

        return touch

    def _paired_at_for(self, device_id: str) -> Callable[[], str | None]:
        known: list[str] = []  # once paired, the date is kept (the file is read once)

        def paired_at() -> str | None:
            if known:
                return known[0]
            store = self.secrets
            if isinstance(store, FileSecretStore):
                when = store.paired_at(device_id)
                if when:
                    known.append(when)
                return when
            return None

        return paired_at

    # -- routing ---------------------------------------------------------------------------
    def device_for(self, door: str, action: Action) -> str:
        """The id of the device at ``door`` that can do ``action``; DeviceUnavailable if none."""
        need = Capability(action.value)
        for sup in self.supervisors.values():
            if sup.cfg.door == door and need in sup.driver.capabilities:
                return sup.id
        raise DeviceUnavailable(
            f"door:{door}", f"no device at door {door!r} can {action.value}; check [[devices]]"
        )

    async def execute(self, door: str, action: Action) -> DeviceState:
        """Do ``action`` at ``door``: the lock for lock/unlock/unlatch, the key safe for open.
        Serialised per device; within the device's ``command_timeout`` it returns the
        confirmed state or raises DeviceUnavailable / DeviceFailed."""
        sup = self.supervisors[self.device_for(door, action)]
        log.info("devices.execute", device=sup.id, door=door, action=action.value)
        return await sup.execute(action)

    async def refresh(self, door: str) -> dict[str, DeviceState]:
        """Ask every device at ``door`` for its state now; raise the first failure after
        trying them all (the others' states are still taken in)."""
        sups = [s for s in self.supervisors.values() if s.cfg.door == door]
        if not sups:
            raise DeviceUnavailable(f"door:{door}", f"no device at door {door!r}")
        results = await asyncio.gather(*(s.refresh() for s in sups), return_exceptions=True)
        out: dict[str, DeviceState] = {}
        for sup, res in zip(sups, results, strict=True):
            if isinstance(res, BaseException):
                raise res
            out[sup.id] = res
        return out

    # -- what is known ---------------------------------------------------------------------
    def states(self) -> dict[str, DeviceState]:
        return {i: s.state for i, s in self.supervisors.items() if s.state is not None}

    def records(self) -> dict[str, DeviceRecord]:
        return {i: s.record() for i, s in self.supervisors.items()}

    def inventory(self) -> list[dict[str, Any]]:
        return [s.record().inventory() for s in self.supervisors.values()]

    def retained_state(self, device_id: str) -> DeviceStatePayload:
        """``devices/<id>/state`` (CONTRACT §4): the last state the device reported (all
        ``unknown`` before it ever answered) and what is wrong with it now."""
        sup = self.supervisors[device_id]
        state = sup.state if sup.state is not None else DeviceState(kind=sup.kind)
        return DeviceStatePayload(**state.model_dump(), problems=sup.problems())

    def availability(self, device_id: str) -> DeviceAvailability:
        """``devices/<id>/availability``: online once the device answered since the
        gateway started, offline (with the reason) otherwise."""
        sup = self.supervisors[device_id]
        if sup.online:
            return DeviceAvailability(state="online")
        if sup.online is None:
            return DeviceAvailability(state="offline", reason="not reached yet since the gateway started")
        return DeviceAvailability(state="offline", reason=sup.error or "no answer")

    def mark_left_unlocked(self, device_id: str) -> None:
        """A visit at this lock ended ``left_unlocked``: a problem until it locks."""
        sup = self.supervisors.get(device_id)
        if sup is not None:
            sup.mark_left_unlocked()

    async def touched(self) -> set[str]:
        """Wait until some device's record (state, online, problems, contact) changed;
        return those devices' ids. Every change is in some answer; one reader only."""
        await self._touched_event.wait()
        self._touched_event.clear()
        ids, self._touched_ids = self._touched_ids, set()
        return ids

    def health(self) -> list[DeviceHealth]:
        """The devices part of ``gateway.health.Snapshot``."""
        return [
            DeviceHealth(
                id=r.id,
                door=r.door,
                online=bool(r.online),
                last_contact=r.last_contact,
                battery=r.battery,
                health_interval=self.supervisors[r.id].health_interval,
                error=r.error,
                reached=r.online is not None,
                problems=self.supervisors[r.id].problems(),
                unknown_pairings=r.unknown_pairings,
            )
            for r in self.records().values()
        ]

    # -- changes ---------------------------------------------------------------------------
    def on_change(self, cb: ChangeCallback) -> None:
        """Call ``cb(device_id, state)`` (sync or async) for every new state, in order."""
        self._callbacks.append(cb)

    async def changes(self) -> AsyncIterator[tuple[str, DeviceState]]:
        """Every new state from now on, as (device id, state); one queue per iterator."""
        q: asyncio.Queue[tuple[str, DeviceState]] = asyncio.Queue(maxsize=1024)
        self._subscribers.add(q)
        try:
            while True:
                yield await q.get()
        finally:
            self._subscribers.discard(q)

    async def _state_changed(self, device_id: str, state: DeviceState) -> None:
        for q in list(self._subscribers):
            if q.full():  # a stalled reader loses the oldest, never blocks a device
                q.get_nowait()
            q.put_nowait((device_id, state))
        for cb in list(self._callbacks):
            try:
                res = cb(device_id, state)
                if inspect.isawaitable(res):
                    await res
            except Exception as exc:
                log.error("devices.callback_failed", device=device_id, error=str(exc))

    # -- lifecycle -------------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("devices.task_failed", task=task.get_name(), error=repr(exc))

    async def _snapshots(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            # the records are frozen values; the file's write and fsync happen off the
            # loop, which would otherwise stand still for a disk flush twice a second
            # while doors are in use (bench/unlock_latency.py)
            job = asyncio.get_running_loop().run_in_executor(
                None, self.write_snapshot, list(self.records().values())
            )
            self._snapshot_job = job
            await asyncio.shield(job)
            await asyncio.sleep(SNAPSHOT_INTERVAL)

    def write_snapshot(self, records: list[DeviceRecord] | None = None) -> None:
        if self.state_file is None:
            return
        try:
            self.state_file.write(list(self.records().values()) if records is None else records)
        except OSError as exc:  # a full disk must not stop the doors
            log.error("devices.snapshot_failed", error=str(exc))

    async def __aenter__(self) -> DeviceManager:
        for sup in self.supervisors.values():
            self._spawn(sup.run(), f"device:{sup.id}")
        self._spawn(self._snapshots(), "devices:snapshot")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(s.close() for s in self.supervisors.values()))
        if self._snapshot_job is not None:  # an older snapshot must not land after the last
            await asyncio.gather(self._snapshot_job, return_exceptions=True)
        self.write_snapshot()
