"""Device supervision against a small in-memory driver: routing, bounds, events, snapshot.

The end-to-end behaviour against the real carelock simulators is in
``tests/test_devices_e2e.py``; these pin the supervisor's own logic quickly.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.base import Driver, SecretStore
from gateway.config import Config, DeviceConfig, SiteConfig
from gateway.devices import (
    BatteryTrend,
    DeviceManager,
    FileSecretStore,
    StateFile,
    backoff_delay,
)
from protocols.device import (
    Action,
    Capability,
    CompartmentState,
    DeviceInfo,
    DeviceKind,
    DeviceState,
    KeyState,
)
from protocols.errors import DeviceFailed, DeviceUnavailable, KeyFileError
from protocols.events import DoorState, Envelope, EventBody, LockState


class ListSink:
    """An EventSink that keeps the bodies (the journal is another issue's)."""

    def __init__(self) -> None:
        self.bodies: list[EventBody] = []
        self.seq = 0
        self.arrived = asyncio.Condition()

    async def emit(self, body: EventBody) -> Envelope:
        self.seq += 1
        self.bodies.append(body)
        async with self.arrived:
            self.arrived.notify_all()
        return Envelope(id=f"e{self.seq}", seq=self.seq, ts="2026-01-01T00:00:00.000Z",
                        site="s", body=body)

    def of(self, type_: str) -> list[Any]:
        return [b for b in self.bodies if b.type == type_]

    async def wait_for(
        self, pred: Callable[[EventBody], bool], timeout: float = 10, *, after: int = 0
    ) -> Any:
        """The first body from index ``after`` on that matches (waiting for it)."""
        async with asyncio.timeout(timeout), self.arrived:
            while True:
                for b in self.bodies[after:]:
                    if pred(b):
                        return b
                await self.arrived.wait()


class Device:
    """The in-memory far side: what the fake driver talks to."""

    def __init__(self, kind: DeviceKind) -> None:
        self.kind = kind
        self.reachable = True
        self.slow = False
        self.jam = False
        self.lock = LockState.LOCKED
        self.door = DoorState.CLOSED
        self.compartment = CompartmentState.CLOSED
        self.key = KeyState.PRESENT
        self.battery = 90
        self.link: FakeDriver | None = None

    def state(self) -> DeviceState:
        if self.kind is DeviceKind.LOCK:
            return DeviceState(kind=self.kind, lock=self.lock, door=self.door, battery=self.battery)
        return DeviceState(kind=self.kind, compartment=self.compartment, key=self.key,
                           battery=self.battery)

    def drop_link(self) -> None:
        if self.link is not None:
            self.link.connected = False
            self.link._link_lost()  # as bleak's disconnected callback makes a real driver do

    def notify(self) -> None:
        if self.link is not None and self.link.connected:
            self.link.push(self.state())


class FakeDriver(Driver):
    name: ClassVar[str] = "fake"
    kind: ClassVar[DeviceKind] = DeviceKind.LOCK
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.LOCK, Capability.UNLOCK, Capability.UNLATCH, Capability.DOOR_SENSOR,
         Capability.BATTERY}
    )
    devices: ClassVar[dict[str, Device]] = {}

    def __init__(self, device_id: str, address: str, *, secrets: SecretStore,
                 options: Any = None, timeout: float = 5.0) -> None:
        super().__init__(device_id, address, secrets=secrets, options=options, timeout=timeout)
        self.dev = self.devices[address]
        self.connected = False
        self.connects = 0

    def push(self, st: DeviceState) -> None:
        self._publish(st)

    async def _wait(self) -> None:
        if not self.dev.reachable or not self.connected:
            raise OSError("link down")
        if self.dev.slow:
            await asyncio.sleep(3600)

    async def _connect(self) -> None:
        if not self.dev.reachable:
            raise OSError("no such device in range")
        self.connected = True
        self.connects += 1
        self.dev.link = self

    async def _disconnect(self) -> None:
        self.connected = False

    async def _execute(self, action: Action) -> DeviceState:
        await self._wait()
        if self.dev.jam:
            self.dev.lock = LockState.JAMMED
            return self.dev.state()
        if action is Action.OPEN:
            self.dev.compartment = CompartmentState.OPEN
        else:
            self.dev.lock = {Action.LOCK: LockState.LOCKED, Action.UNLOCK: LockState.UNLOCKED,
                             Action.UNLATCH: LockState.UNLATCHED}[action]
        return self.dev.state()

    async def _refresh(self) -> DeviceState:
        await self._wait()
        return self.dev.state()

    async def _pair(self) -> None:
        self.secrets.save(self.device_id, {"k": "00"})

    async def device_info(self) -> DeviceInfo:
        return DeviceInfo(manufacturer="Test", model=f"T-{self.kind.value}", serial=self.address,
                          firmware="1.0")

    @property
    def is_connected(self) -> bool:
        return self.connected


class FakeKeysafe(FakeDriver):
    name: ClassVar[str] = "fake-keysafe"
    kind: ClassVar[DeviceKind] = DeviceKind.KEYSAFE
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.OPEN, Capability.KEY_SENSOR, Capability.BATTERY}
    )


def lookup(name: str) -> type[Driver]:
    return {"fake": FakeDriver, "fake-keysafe": FakeKeysafe}[name]


def config(tmp_path: Path, **dev: Any) -> Config:
    common: dict[str, Any] = dict(
        health_interval=0.2, command_timeout=0.5, reconnect_min=0.05, reconnect_max=0.2,
        door_left_open_after=0.3, key_not_returned_after=0.3,
    )
    common.update(dev)
    return Config(
        site=SiteConfig(id="s1", data_dir=tmp_path),
        devices=[
            DeviceConfig(id="front-lock", door="front", driver="fake", address="L1", **common),
            DeviceConfig(id="front-keysafe", door="front", driver="fake-keysafe", address="K1",
                         **common),
        ],
    )


@pytest.fixture
def devs() -> dict[str, Device]:
    FakeDriver.devices = {"L1": Device(DeviceKind.LOCK), "K1": Device(DeviceKind.KEYSAFE)}
    return FakeDriver.devices


def paired(tmp_path: Path) -> FileSecretStore:
    store = FileSecretStore(tmp_path)
    store.save("front-lock", {"k": "1"})
    store.save("front-keysafe", {"k": "2"})
    return store


async def online(sink: ListSink, device: str) -> None:
    await sink.wait_for(lambda b: b.type == "device.online" and b.device == device)


# -- routing and commands -----------------------------------------------------------------
async def test_actions_are_routed_to_the_device_of_the_door_that_can_do_them(
    tmp_path: Path, devs: dict[str, Device]
) -> None:
    sink = ListSink()
    mgr = DeviceManager.from_config(config(tmp_path), sink, secrets=paired(tmp_path),
                                    drivers=lookup)
    assert mgr.device_for("front", Action.UNLOCK) == "front-lock"
    assert mgr.device_for("front", Action.OPEN) == "front-keysafe"
    with pytest.raises(DeviceUnavailable):
        mgr.device_for("back", Action.UNLOCK)
    async with mgr:
        st = await mgr.execute("front", Action.UNLOCK)
        assert st.lock is LockState.UNLOCKED
        st = await mgr.execute("front", Action.OPEN)
        assert st.compartment is CompartmentState.OPEN
        assert mgr.states()["front-lock"].lock is LockState.UNLOCKED
    locks = sink.of("lock.state")
    assert locks[-1].lock == LockState.UNLOCKED and locks[-1].door == "front"
    assert sink.of("keysafe.state")[-1].compartment == "open"


async def test_a_jammed_lock_raises_device_failed_and_reports_jammed(
    tmp_path: Path, devs: dict[str, Device]
) -> None:
    sink = ListSink()
    async with DeviceManager.from_config(config(tmp_path), sink, secrets=paired(tmp_path),
                                         drivers=lookup) as mgr:
        await online(sink, "front-lock")
        devs["L1"].jam = True
        with pytest.raises(DeviceFailed) as info:
            await mgr.execute("front", Action.UNLOCK)
        assert info.value.device_id == "front-lock"
    assert sink.of("lock.state")[-1].lock == LockState.JAMMED
    assert mgr.records()["front-lock"].error is not None


async def test_a_silent_device_gives_device_unavailable_and_goes_offline(
    tmp_path: Path, devs: dict[str, Device]
) -> None:
    sink = ListSink()
    async with DeviceManager.from_config(config(tmp_path), sink, secrets=paired(tmp_path),
                                         drivers=lookup) as mgr:
        await online(sink, "front-lock")
        devs["L1"].slow = True
        with pytest.raises(DeviceUnavailable):
            await mgr.execute("front", Action.UNLOCK)
        await sink.wait_for(lambda b: b.type == "device.offline" and b.device == "front-lock")
        devs["L1"].slow = False
        await sink.wait_for(lambda b: b.type == "device.online" and b.device == "front-lock"
                            and sink.of("device.offline") != [])
        assert (await mgr.execute("front", Action.UNLOCK)).lock is LockState.UNLOCKED


async def test_commands_to_one_device_are_serialised(
    tmp_path: Path, devs: dict[str, Device]
) -> None:
    sink = ListSink()
    order: list[str] = []
    async with DeviceManager.from_config(config(tmp_path), sink, secrets=paired(tmp_path),
                                         drivers=lookup) as mgr:
        await online(sink, "front-lock")
        drv = mgr.supervisors["front-lock"].driver
        inner = drv._execute
        active = 0

        async def tracked(action: Action) -> DeviceState:
            nonlocal active
            active += 1
            order.append(f"max{active}")
            await asyncio.sleep(0.01)
            active -= 1
            return await inner(action)

        drv._execute = tracked  # type: ignore[method-assign]
        await asyncio.gather(*(mgr.execute("front", a) for a in
                               (Action.UNLOCK, Action.LOCK, Action.UNLATCH, Action.LOCK)))
    assert order == ["max1"] * 4


# -- the link ------------------------------------------------------------------------------
async def test_a_dropped_link_is_reported_offline_then_online_and_reconciled(
    tmp_path: Path, devs: dict[str, Device]
) -> None:
    sink = ListSink()
    async with DeviceManager.from_config(config(tmp_path), sink, secrets=paired(tmp_path),
                                         drivers=lookup):
        await online(sink, "front-lock")
        lock = devs["L1"]
        lock.reachable = False
        lock.drop_link()
        await sink.wait_for(lambda b: b.type == "device.offline" and b.device == "front-lock")
        lock.lock = LockState.UNLOCKED  # turned by hand while the gateway could not see it
        lock.reachable = True
        await sink.wait_for(lambda b: b.type == "lock.state" and b.lock == LockState.UNLOCKED)
    kinds = [b.type for b in sink.bodies if getattr(b, "device", None) == "front-lock"]
    assert kinds.index("device.offline") < len(kinds) - 1 - kinds[::-1].index("device.online")


async def test_an_unpaired_device_is_offline_with_instructions(
    tmp_path: Path, devs: dict[str, Device]
) -> None:
    sink = ListSink()
    async with DeviceManager.from_config(config(tmp_path), sink,
                                         secrets=FileSecretStore(tmp_path), drivers=lookup) as mgr:
        off = await sink.wait_for(lambda b: b.type == "device.offline")
        assert "lockgw pair" in off.reason
        with pytest.raises(DeviceUnavailable):
            await mgr.execute("front", Action.UNLOCK)


def test_backoff_doubles_from_the_minimum_to_the_cap_with_jitter() -> None:
    import random

    rng = random.Random(1)
    delays = [backoff_delay(n, 1.0, 30.0, rng) for n in range(1, 10)]
    assert 0.5 <= delays[0] <= 1.0
    assert 1.0 <= delays[1] <= 2.0
    assert all(15.0 <= d <= 30.0 for d in delays[5:])


# -- watches and battery -------------------------------------------------------------------
async def test_a_door_left_open_is_reported_once(
    tmp_path: Path, devs: dict[str, Device]
) -> None:
    sink = ListSink()
    async with DeviceManager.from_config(config(tmp_path), sink, secrets=paired(tmp_path),
                                         drivers=lookup):
        await online(sink, "front-lock")
        devs["L1"].door = DoorState.OPEN
        devs["L1"].notify()
        ev = await sink.wait_for(lambda b: b.type == "door.left_open")
        assert ev.device == "front-lock" and ev.door == "front"
        await asyncio.sleep(0.5)
    assert len(sink.of("door.left_open")) == 1


async def test_a_key_not_back_after_an_opening_is_reported_and_a_returned_one_is_not(
    tmp_path: Path, devs: dict[str, Device]
) -> None:
    sink = ListSink()
    ks = devs["K1"]
    async with DeviceManager.from_config(config(tmp_path), sink, secrets=paired(tmp_path),
                                         drivers=lookup) as mgr:
        await online(sink, "front-keysafe")
        await mgr.execute("front", Action.OPEN)
        ks.key, ks.compartment = KeyState.PRESENT, CompartmentState.CLOSED  # returned at once
        ks.notify()
        await asyncio.sleep(0.6)
        assert sink.of("keysafe.key_not_returned") == []
        await mgr.execute("front", Action.OPEN)
        ks.key, ks.compartment = KeyState.ABSENT, CompartmentState.CLOSED  # taken away
        ks.notify()
        ev = await sink.wait_for(lambda b: b.type == "keysafe.key_not_returned")
        assert ev.device == "front-keysafe"


async def test_battery_low_and_critical_are_reported_with_days_left(
    tmp_path: Path, devs: dict[str, Device]
) -> None:
    sink = ListSink()
    async with DeviceManager.from_config(config(tmp_path), sink, secrets=paired(tmp_path),
                                         drivers=lookup):
        await online(sink, "front-lock")
        for level in (40, 30, 19, 9):
            devs["L1"].battery = level
            devs["L1"].notify()
            await sink.wait_for(lambda b, lv=level: b.type == "battery" and b.level == lv)
    bat = [b for b in sink.of("battery") if b.device == "front-lock"]
    low = next(b for b in bat if b.level == 19)
    assert low.low and not low.critical
    crit = bat[-1]
    assert crit.level == 9 and crit.critical and crit.days_left is not None


def test_days_left_follows_the_trend_and_restarts_after_new_batteries() -> None:
    trend = BatteryTrend()
    day = 86400.0
    for d in range(10):
        trend.add(d * day, 80 - 2 * d)  # 2 points a day
    assert trend.days_left(62) == pytest.approx(31, abs=0.1)
    trend.add(11 * day, 100)  # replaced
    assert trend.days_left(100) is None
    trend.add(11 * day + 60, 100)
    assert trend.days_left(100) is None  # no fall, no estimate


# -- what is remembered --------------------------------------------------------------------
async def test_the_snapshot_keeps_the_installed_base_across_a_restart(
    tmp_path: Path, devs: dict[str, Device]
) -> None:
    sink = ListSink()
    cfg = config(tmp_path)
    store = paired(tmp_path)
    async with DeviceManager.from_config(cfg, sink, secrets=store, drivers=lookup) as mgr:
        await online(sink, "front-lock")
        await online(sink, "front-keysafe")
        await mgr.execute("front", Action.UNLOCK)
    _, records = StateFile(tmp_path).read()
    assert records["front-lock"].info is not None
    assert records["front-lock"].info.serial == "L1"
    assert records["front-lock"].state is not None
    assert records["front-lock"].state.lock is LockState.UNLOCKED
    item = records["front-keysafe"].inventory()
    assert item["driver"] == "fake-keysafe" and item["door"] == "front"
    assert item["paired_at"] is not None and item["last_seen"] is not None
    # a restart with the device out of reach still knows what it is and its last state
    devs["L1"].reachable = False
    sink2 = ListSink()
    mgr2 = DeviceManager.from_config(cfg, sink2, secrets=store, drivers=lookup)
    inv = {i["id"]: i for i in mgr2.inventory()}
    assert inv["front-lock"]["serial"] == "L1"
    assert mgr2.states()["front-lock"].lock is LockState.UNLOCKED


async def test_changes_and_callbacks_see_every_new_state(
    tmp_path: Path, devs: dict[str, Device]
) -> None:
    sink = ListSink()
    seen: list[tuple[str, DeviceState]] = []
    mgr = DeviceManager.from_config(config(tmp_path), sink, secrets=paired(tmp_path),
                                    drivers=lookup)

    async def cb(device: str, st: DeviceState) -> None:
        seen.append((device, st))

    mgr.on_change(cb)
    got: list[tuple[str, DeviceState]] = []

    async def reader(it: AsyncIterator[tuple[str, DeviceState]]) -> None:
        async for item in it:
            got.append(item)
            if item[1].lock is LockState.UNLATCHED:
                return

    async with mgr:
        task = asyncio.create_task(reader(mgr.changes()))
        await asyncio.sleep(0)
        await mgr.execute("front", Action.UNLATCH)
        await asyncio.wait_for(task, 5)
    assert ("front-lock", got[-1][1]) in seen


# -- the secret store ----------------------------------------------------------------------
def test_secrets_are_private_files_written_atomically(tmp_path: Path) -> None:
    store = FileSecretStore(tmp_path)
    assert store.load("front-lock") is None
    store.save("front-lock", {"key": "abc"})
    path = tmp_path / "devices" / "keys" / "front-lock.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert store.load("front-lock") == {"key": "abc"}
    first = store.paired_at("front-lock")
    store.save("front-lock", {"key": "def"})
    assert store.paired_at("front-lock") == first
    assert json.loads(path.read_text())["secrets"] == {"key": "def"}
    assert [p.name for p in path.parent.iterdir()] == ["front-lock.json"]
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        store.load("front-lock")
    assert store.delete("front-lock")
    with pytest.raises(ValueError):
        store.path("../x")


# -- the installer commands with the in-memory driver --------------------------------------
def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "lockgw.toml"
    path.write_text(
        '[site]\nid = "s1"\ndata_dir = "data"\n\n'
        '[[devices]]\nid = "front-lock"\ndoor = "front"\ndriver = "fake"\naddress = "L1"\n'
        "command_timeout = 0.5\n"
    )
    return path


async def test_pair_stores_keys_and_devices_shows_the_probe(
    tmp_path: Path, devs: dict[str, Device], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import gateway.cli.devices as cli_devices
    from gateway.cli import main

    monkeypatch.setattr(cli_devices, "DRIVERS", lookup)
    cfg = write_config(tmp_path)
    assert await main(["devices", "--config", str(cfg), "--lang", "en"]) == 0
    out = capsys.readouterr().out
    assert "front-lock" in out and "not paired" in out
    assert await main(["devices", "--config", str(cfg)]) == 0  # Dutch, the default
    out = capsys.readouterr().out
    assert "APPARAAT" in out and "niet gekoppeld" in out and "1 apparaat;" in out
    assert await main(["pair", "--config", str(cfg), "front-lock"]) == 0
    out = capsys.readouterr().out
    assert "serial L1" in out and "locked, door closed" in out
    assert (tmp_path / "data" / "devices" / "keys" / "front-lock.json").exists()
    # pairing again needs --yes (stdin is not a terminal here)
    assert await main(["pair", "--config", str(cfg), "front-lock"]) == 1
    assert "--yes" in capsys.readouterr().err
    assert await main(["devices", "--config", str(cfg), "--probe", "--json"]) == 0
    [item] = json.loads(capsys.readouterr().out)
    assert item["serial"] == "L1" and item["online"] is True and item["battery"] == 90
    devs["L1"].reachable = False
    assert await main(["devices", "--config", str(cfg), "--probe", "--lang", "en"]) == 0
    assert "OFFLINE" in capsys.readouterr().out
    assert await main(["devices", "--config", str(cfg), "--probe"]) == 0
    assert "NIET BEREIKBAAR" in capsys.readouterr().out
    assert await main(["pair", "--config", str(cfg), "nope"]) == 1
    assert "front-lock" in capsys.readouterr().err


@given(st.lists(st.tuples(st.floats(0, 1e7), st.integers(0, 100)), max_size=100))
def test_days_left_is_never_negative_and_absent_without_a_fall(
    readings: list[tuple[float, int]]
) -> None:
    trend = BatteryTrend()
    for t, level in sorted(readings):
        trend.add(t, level)
        left = trend.days_left(level)
        assert left is None or left >= 0
        slope = trend.slope_per_day()
        if slope is None or slope >= 0:
            assert left is None
    assert len(trend.samples) <= 64


def test_a_broken_key_file_says_to_pair_again(tmp_path: Path) -> None:
    store = FileSecretStore(tmp_path)
    store.save("front-lock", {"k": 1})
    store.path("front-lock").write_text("{not json")
    with pytest.raises(KeyFileError, match="lockgw pair"):
        store.load("front-lock")


def test_reconnect_min_above_max_is_a_config_problem(tmp_path: Path) -> None:
    from gateway.config import load_config
    from protocols.errors import ConfigError

    path = tmp_path / "c.toml"
    path.write_text(
        '[site]\nid = "s"\n[[devices]]\nid = "d"\ndoor = "f"\ndriver = "x"\naddress = "a"\n'
        "reconnect_min = 10\nreconnect_max = 1\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert any("reconnect_min" in p for p in info.value.problems)


async def test_on_demand_connects_per_command_and_lets_go_after(
    tmp_path: Path, devs: dict[str, Device]
) -> None:
    sink = ListSink()
    cfg = config(tmp_path, connection="on_demand")
    async with DeviceManager.from_config(cfg, sink, secrets=paired(tmp_path),
                                         drivers=lookup) as mgr:
        await online(sink, "front-lock")
        drv = mgr.supervisors["front-lock"].driver
        assert isinstance(drv, FakeDriver)
        before = drv.connects
        assert (await mgr.execute("front", Action.UNLOCK)).lock is LockState.UNLOCKED
        assert drv.connects > before and not drv.is_connected
        # polls notice an outage and the recovery
        devs["L1"].reachable = False
        await sink.wait_for(lambda b: b.type == "device.offline" and b.device == "front-lock")
        devs["L1"].reachable = True
        mark = len(sink.bodies)
        await sink.wait_for(lambda b: b.type == "device.online" and b.device == "front-lock",
                            after=mark)
        health = {h.id: h for h in mgr.health()}
        assert health["front-lock"].online and health["front-lock"].last_contact is not None


async def test_a_door_open_at_a_restart_is_still_watched(
    tmp_path: Path, devs: dict[str, Device]
) -> None:
    cfg = config(tmp_path)
    store = paired(tmp_path)
    devs["L1"].door = DoorState.OPEN
    sink = ListSink()
    async with DeviceManager.from_config(cfg, sink, secrets=store, drivers=lookup):
        await sink.wait_for(lambda b: b.type == "lock.state" and b.door_state == "open")
    # the gateway restarts while the door still stands open
    sink2 = ListSink()
    async with DeviceManager.from_config(cfg, sink2, secrets=store, drivers=lookup):
        ev = await sink2.wait_for(lambda b: b.type == "door.left_open")
        assert ev.device == "front-lock"
    assert sink2.of("lock.state") == []  # nothing changed: no duplicate state event


async def test_retained_state_and_availability_follow_problems_and_the_link(
    tmp_path: Path, devs: dict[str, Device]
) -> None:
    """What the MQTT link keeps retained per device: a problem is there while it lasts
    (door left open, key not returned, left unlocked, jammed) and availability says why a
    device is offline; every change is told through ``touched``."""
    sink = ListSink()
    async with DeviceManager.from_config(config(tmp_path), sink, secrets=paired(tmp_path),
                                         drivers=lookup) as mgr:
        before = mgr.availability("front-lock")
        assert before.state == "offline" and "not reached yet" in (before.reason or "")
        assert mgr.retained_state("front-lock").lock is None  # unknown until it answers
        await online(sink, "front-lock")
        await online(sink, "front-keysafe")
        assert mgr.availability("front-lock").state == "online"

        async def until(device: str, problems: list[str]) -> None:
            async with asyncio.timeout(10):
                while mgr.retained_state(device).problems != problems:
                    await mgr.touched()

        devs["L1"].door = DoorState.OPEN
        devs["L1"].notify()
        await until("front-lock", ["door_left_open"])
        devs["L1"].door = DoorState.CLOSED
        devs["L1"].notify()
        await until("front-lock", [])

        await mgr.execute("front", Action.UNLOCK)
        mgr.mark_left_unlocked("front-lock")
        await until("front-lock", ["left_unlocked"])
        await mgr.execute("front", Action.LOCK)
        await until("front-lock", [])

        devs["L1"].jam = True
        with pytest.raises(DeviceFailed):
            await mgr.execute("front", Action.UNLOCK)
        await until("front-lock", ["lock_jammed"])

        await mgr.execute("front", Action.OPEN)
        devs["K1"].key, devs["K1"].compartment = KeyState.ABSENT, CompartmentState.CLOSED
        devs["K1"].notify()
        await until("front-keysafe", ["key_not_returned"])
        devs["K1"].key = KeyState.PRESENT
        devs["K1"].notify()
        await until("front-keysafe", [])

        devs["K1"].reachable = False
        devs["K1"].drop_link()
        async with asyncio.timeout(10):
            while mgr.availability("front-keysafe").state != "offline":
                await mgr.touched()
        assert mgr.availability("front-keysafe").reason
