"""carelock drivers ↔ simulators through bleak and the loopback backend: every action, every fault."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from drivers import carelock as carelock_driver
from drivers.ble import make_client
from drivers.carelock import CarelockKeysafeDriver, CarelockLockDriver
from protocols.carelock import CentralSession, Kind, Opcode, Status, decode_frame, gatt
from protocols.carelock.frames import ErrorFrame
from protocols.device import Action, CompartmentState, DeviceState, DoorState, KeyState, LockState
from protocols.errors import DeviceFailed, DeviceUnavailable, PairingError, PairingNotConfirmed
from simulators.carelock import CarelockSimulator
from simulators.control import ControlError, ControlServer, send_control
from tests.simprocs import pair_confirmed


class MemorySecrets:
    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    def load(self, device_id: str) -> dict[str, Any] | None:
        return self.data.get(device_id)

    def save(self, device_id: str, secrets: dict[str, Any]) -> None:
        self.data[device_id] = dict(secrets)


@pytest.fixture
async def lock_sim() -> AsyncIterator[CarelockSimulator]:
    async with CarelockSimulator(Kind.LOCK, pairing=True) as sim:
        yield sim


@pytest.fixture
async def safe_sim() -> AsyncIterator[CarelockSimulator]:
    async with CarelockSimulator(Kind.KEYSAFE, pairing=True) as sim:
        yield sim


@pytest.fixture
async def lock(lock_sim: CarelockSimulator) -> AsyncIterator[CarelockLockDriver]:
    driver = CarelockLockDriver(
        "front-lock", lock_sim.address, secrets=MemorySecrets(), timeout=3.0
    )
    await pair_confirmed(driver, lock_sim)
    yield driver
    await driver.disconnect()


@pytest.fixture
async def safe(safe_sim: CarelockSimulator) -> AsyncIterator[CarelockKeysafeDriver]:
    driver = CarelockKeysafeDriver(
        "key-safe", safe_sim.address, secrets=MemorySecrets(), timeout=3.0
    )
    await pair_confirmed(driver, safe_sim)
    yield driver
    await driver.disconnect()


async def next_state(
    driver: CarelockLockDriver | CarelockKeysafeDriver, pred: Callable[[DeviceState], bool]
) -> DeviceState:
    async with contextlib.aclosing(driver.events()) as events, asyncio.timeout(5):
        async for state in events:
            if pred(state):
                return state
    raise AssertionError("unreachable")


# -- actions ---------------------------------------------------------------------------------
async def test_lock_unlock_unlatch_confirm_the_bolt(lock: CarelockLockDriver) -> None:
    assert (await lock.execute(Action.UNLOCK)).lock is LockState.UNLOCKED
    assert (await lock.execute(Action.LOCK)).lock is LockState.LOCKED
    state = await lock.execute(Action.UNLATCH)
    assert (state.lock, state.door, state.battery) == (LockState.UNLATCHED, DoorState.CLOSED, 100)
    assert (await lock.refresh()).lock is LockState.UNLATCHED


async def test_key_safe_opens_and_reports_compartment_and_key(
    safe: CarelockKeysafeDriver, safe_sim: CarelockSimulator
) -> None:
    state = await safe.execute(Action.OPEN)
    assert (state.compartment, state.key) == (CompartmentState.OPEN, KeyState.PRESENT)
    safe_sim.switch("key", "take")
    assert (
        await next_state(safe, lambda s: s.key is KeyState.ABSENT)
    ).compartment is CompartmentState.OPEN
    safe_sim.switch("key", "return")
    safe_sim.switch("compartment", "close")
    state = await next_state(safe, lambda s: s.compartment is CompartmentState.CLOSED)
    assert state.key is KeyState.PRESENT
    with pytest.raises(DeviceFailed, match="cannot unlock"):
        await safe.execute(Action.UNLOCK)


async def test_lock_cannot_open_a_compartment(lock: CarelockLockDriver) -> None:
    with pytest.raises(DeviceFailed, match="cannot open"):
        await lock.execute(Action.OPEN)


async def test_device_information_and_battery_service(
    lock: CarelockLockDriver, lock_sim: CarelockSimulator
) -> None:
    info = await lock.device_info()
    assert (info.model, info.serial, info.firmware) == (
        "CL-LOCK-1",
        lock_sim.device.info.serial,
        "1.0.0",
    )
    lock_sim.switch("battery", 42)
    assert (await next_state(lock, lambda s: s.battery == 42)).lock is LockState.LOCKED
    assert (await lock.refresh()).battery == 42


async def test_door_contact_and_auto_relock_are_notified(
    lock_sim: CarelockSimulator,
) -> None:
    driver = CarelockLockDriver(
        "front-lock", lock_sim.address, secrets=MemorySecrets(), options={"auto_relock": 1}
    )
    await pair_confirmed(driver, lock_sim)
    try:
        assert (await driver.execute(Action.UNLOCK)).lock is LockState.UNLOCKED
        lock_sim.switch("door", "open")
        assert (
            await next_state(driver, lambda s: s.door is DoorState.OPEN)
        ).lock is LockState.UNLOCKED
        lock_sim.switch("door", "close")
        await next_state(
            driver, lambda s: s.lock is LockState.LOCKED and s.door is DoorState.CLOSED
        )
    finally:
        await driver.disconnect()


async def test_another_central_hears_the_change_as_an_event(lock_sim: CarelockSimulator) -> None:
    secrets = MemorySecrets()
    first = CarelockLockDriver("front-lock", lock_sim.address, secrets=secrets)
    await pair_confirmed(first, lock_sim)
    second = CarelockLockDriver("front-lock", lock_sim.address, secrets=secrets)
    try:
        await second.connect()
        await first.execute(Action.UNLOCK)
        await next_state(second, lambda s: s.lock is LockState.UNLOCKED)
    finally:
        await first.disconnect()
        await second.disconnect()


async def test_connects_on_demand(lock: CarelockLockDriver) -> None:
    await lock.disconnect()
    assert not lock.is_connected
    assert (await lock.execute(Action.UNLOCK)).lock is LockState.UNLOCKED
    assert lock.is_connected


# -- pairing -----------------------------------------------------------------------------------
async def test_pairing_refused_when_not_in_pairing_mode() -> None:
    async with CarelockSimulator(Kind.LOCK) as sim:
        driver = CarelockLockDriver("front-lock", sim.address, secrets=MemorySecrets())
        with pytest.raises(PairingError, match="not in pairing mode"):
            await driver.pair()
        assert not driver.is_paired
        with pytest.raises(PairingError, match="not paired"):
            await driver.connect()
        sim.switch("pairing", "on")
        await pair_confirmed(driver, sim)
        assert (
            driver.is_paired and driver.pairing_code is not None and len(driver.pairing_code) == 6
        )
        await driver.disconnect()


async def test_a_code_rejected_on_the_device_stores_nothing_and_the_window_stays_open(
    lock_sim: CarelockSimulator,
) -> None:
    secrets = MemorySecrets()
    driver = CarelockLockDriver("front-lock", lock_sim.address, secrets=secrets)
    with pytest.raises(PairingNotConfirmed, match="rejected on the device"):
        await pair_confirmed(driver, lock_sim, button="reject")
    assert not driver.is_paired and lock_sim.device.pairing_ids() == []
    assert lock_sim.device.pairing_mode
    await driver.disconnect()
    await pair_confirmed(driver, lock_sim)  # the installer tries again and confirms
    assert driver.is_paired and len(lock_sim.device.pairing_ids()) == 1
    await driver.disconnect()


async def test_no_word_from_the_device_is_a_pairing_not_confirmed(
    lock_sim: CarelockSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The device never sends PAIR_DONE (here: it waits longer than the driver): the driver
    gives up, keeps nothing, and its link going drops the device's pending pairing."""
    monkeypatch.setattr(carelock_driver, "CONFIRM_TIMEOUT", 0.2)
    monkeypatch.setattr(carelock_driver, "CONFIRM_GRACE", 0.2)
    gone = asyncio.Event()
    hook = lock_sim.server.on_disconnect
    assert hook is not None

    def on_disconnect(conn: Any) -> None:
        hook(conn)
        gone.set()

    lock_sim.server.on_disconnect = on_disconnect
    driver = CarelockLockDriver("front-lock", lock_sim.address, secrets=MemorySecrets())
    with pytest.raises(PairingNotConfirmed, match=r"did not say in 0\.4 s"):
        await driver.pair()
    assert not driver.is_paired and lock_sim.device.pending_code is not None
    await driver.disconnect()
    async with asyncio.timeout(5):
        await gone.wait()
    assert lock_sim.device.pending_code is None
    assert lock_sim.device.pairing_ids() == [] and lock_sim.device.pairing_mode


async def test_refused_pairing_fault(lock_sim: CarelockSimulator) -> None:
    lock_sim.switch("refuse-pairing", "on")
    driver = CarelockLockDriver("front-lock", lock_sim.address, secrets=MemorySecrets())
    with pytest.raises(PairingError, match="refused pairing"):
        await driver.pair()
    await driver.disconnect()


async def test_pairing_stores_the_key_in_the_secret_store(lock_sim: CarelockSimulator) -> None:
    secrets = MemorySecrets()
    driver = CarelockLockDriver("front-lock", lock_sim.address, secrets=secrets)
    await pair_confirmed(driver, lock_sim)
    await driver.disconnect()
    stored = secrets.data["front-lock"]
    assert stored["profile"] == "carelock-v1" and len(bytes.fromhex(stored["pair_key"])) == 32
    assert lock_sim.device.key_for(bytes.fromhex(stored["key_id"])) == bytes.fromhex(
        stored["pair_key"]
    )


async def test_a_device_that_forgot_the_gateway_asks_for_pairing_again() -> None:
    secrets = MemorySecrets()
    async with CarelockSimulator(Kind.LOCK, pairing=True) as sim:
        driver = CarelockLockDriver("front-lock", sim.address, secrets=secrets)
        await pair_confirmed(driver, sim)
        await driver.disconnect()
    async with CarelockSimulator(Kind.LOCK) as fresh:  # a factory reset: no pairings
        driver = CarelockLockDriver("front-lock", fresh.address, secrets=secrets)
        with pytest.raises(PairingError, match="pair again"):
            await driver.connect()


async def test_the_wrong_kind_of_device_is_refused(safe_sim: CarelockSimulator) -> None:
    driver = CarelockLockDriver("front-lock", safe_sim.address, secrets=MemorySecrets())
    with pytest.raises(DeviceFailed, match="is a carelock keysafe, not a lock"):
        await driver.pair()


async def test_state_and_pairing_survive_a_simulator_restart(tmp_path: Path) -> None:
    state, secrets = tmp_path / "lock.json", MemorySecrets()
    async with CarelockSimulator(Kind.LOCK, pairing=True, state_file=state) as sim:
        driver = CarelockLockDriver("front-lock", sim.address, secrets=secrets)
        await pair_confirmed(driver, sim)
        await driver.execute(Action.UNLOCK)
        sim.switch("door", "open")
        sim.switch("battery", 37)
        serial = (await driver.device_info()).serial
        await driver.disconnect()
    async with CarelockSimulator(Kind.LOCK, state_file=state) as again:
        driver = CarelockLockDriver("front-lock", again.address, secrets=secrets)
        state_now = await driver.refresh()
        assert (state_now.lock, state_now.door, state_now.battery) == (
            LockState.UNLOCKED,
            DoorState.OPEN,
            37,
        )
        assert (await driver.device_info()).serial == serial
        await driver.disconnect()


# -- device faults -------------------------------------------------------------------------------
async def test_jam_fails_the_action_and_reports_jammed(
    lock: CarelockLockDriver, lock_sim: CarelockSimulator
) -> None:
    lock_sim.switch("jam", "on")
    with pytest.raises(DeviceFailed, match="jammed"):
        await lock.execute(Action.UNLOCK)
    assert (await next_state(lock, lambda s: s.lock is LockState.JAMMED)).door is DoorState.CLOSED
    lock_sim.switch("jam", "off")
    assert (await lock.execute(Action.UNLOCK)).lock is LockState.UNLOCKED


async def test_frozen_key_safe_fails_to_open(
    safe: CarelockKeysafeDriver, safe_sim: CarelockSimulator
) -> None:
    safe_sim.switch("jam", "on")
    with pytest.raises(DeviceFailed, match="jammed"):
        await safe.execute(Action.OPEN)


async def test_battery_drain_is_notified_until_empty(
    lock: CarelockLockDriver, lock_sim: CarelockSimulator
) -> None:
    lock_sim.switch("battery", 11)
    await next_state(lock, lambda s: s.battery == 11 and not s.battery_critical)
    lock_sim.switch("drain", "on")
    await next_state(lock, lambda s: s.battery is not None and s.battery <= 10)
    lock_sim.switch("battery", 0)
    lock_sim.switch("drain", "off")
    with pytest.raises(DeviceFailed, match="battery empty"):
        await lock.execute(Action.UNLOCK)
    assert (await lock.refresh()).battery_critical


async def test_door_open_refuses_to_lock(
    lock: CarelockLockDriver, lock_sim: CarelockSimulator
) -> None:
    await lock.execute(Action.UNLOCK)
    lock_sim.switch("door", "open")
    with pytest.raises(DeviceFailed, match="door is open"):
        await lock.execute(Action.LOCK)


async def test_slow_device_surfaces_as_unavailable_within_the_timeout(
    lock: CarelockLockDriver, lock_sim: CarelockSimulator
) -> None:
    lock.timeout = 0.3
    lock_sim.switch("slow", 1000)
    with pytest.raises(DeviceUnavailable, match="no answer"):
        await lock.execute(Action.UNLOCK)
    lock_sim.switch("slow", 0)
    lock.timeout = 3.0
    await asyncio.sleep(1.0)  # the late answer arrives and is ignored (it names an old command)
    assert (await lock.execute(Action.LOCK)).lock is LockState.LOCKED


async def test_tampered_answers_are_refused_by_the_driver(
    lock: CarelockLockDriver, lock_sim: CarelockSimulator
) -> None:
    lock_sim.switch("tamper", "on")
    with pytest.raises(DeviceFailed, match="answer refused"):
        await lock.execute(Action.UNLOCK)
    await lock.disconnect()
    with pytest.raises(DeviceFailed, match="failed authentication"):
        await lock.connect()  # the sealed session accept is tampered too
    lock_sim.switch("tamper", "off")
    assert (await lock.execute(Action.LOCK)).lock is LockState.LOCKED


# -- link faults ---------------------------------------------------------------------------------
async def test_link_drop_mid_command_surfaces_fast_and_reconnects(
    lock: CarelockLockDriver, lock_sim: CarelockSimulator
) -> None:
    lock.timeout = 30.0  # a dropped link must not wait for the timeout
    lock_sim.switch("slow", 500)
    task = asyncio.create_task(lock.execute(Action.UNLOCK))
    await asyncio.sleep(0.1)
    assert lock_sim.faults.apply("drop")["dropped"] == 1
    async with asyncio.timeout(3):
        with pytest.raises(DeviceUnavailable):
            await task
    lock_sim.switch("slow", 0)
    assert not lock.is_connected
    assert (await lock.execute(Action.LOCK)).lock is LockState.LOCKED  # reconnects on demand


async def test_refused_connection_is_unavailable(
    lock: CarelockLockDriver, lock_sim: CarelockSimulator
) -> None:
    await lock.disconnect()
    lock_sim.faults.apply("refuse", True)
    with pytest.raises(DeviceUnavailable):
        await lock.connect()
    lock_sim.faults.apply("refuse", False)
    await lock.connect()


async def test_corrupt_link_frame_is_refused(
    lock: CarelockLockDriver, lock_sim: CarelockSimulator
) -> None:
    lock_sim.faults.apply("corrupt", 1)
    with pytest.raises((DeviceUnavailable, DeviceFailed)):
        await lock.execute(Action.UNLOCK)
    assert (await lock.execute(Action.UNLOCK)).lock is LockState.UNLOCKED


async def test_per_frame_link_delay_still_works(
    lock: CarelockLockDriver, lock_sim: CarelockSimulator
) -> None:
    lock_sim.faults.apply("delay_ms", 30)
    assert (await lock.execute(Action.UNLOCK)).lock is LockState.UNLOCKED


async def test_switches_through_the_control_channel(
    lock_sim: CarelockSimulator, lock: CarelockLockDriver
) -> None:
    async with ControlServer() as control:
        lock_sim.register_controls(control)
        state = await send_control(control.address, "door", "open")
        assert state["door"] == "open"
        await next_state(lock, lambda s: s.door is DoorState.OPEN)
        assert (await send_control(control.address, "delay_ms", 5))["delay_ms"] == 5
        assert (await send_control(control.address, "state"))["faults"]["delay_ms"] == 5
        assert (await send_control(control.address, "corrupt", 0))["corrupt"] == 0  # the link's
        assert (await send_control(control.address, "tamper", "on"))["faults"]["tamper"] is True
        with pytest.raises(ControlError, match="unknown control"):
            await send_control(control.address, "explode", "on")


# -- the device refuses tampered, replayed and truncated commands over the real link ---------------
async def test_device_refuses_replayed_tampered_and_truncated_commands(
    lock: CarelockLockDriver, lock_sim: CarelockSimulator
) -> None:
    await lock.disconnect()
    stored = lock.secrets.load("front-lock")
    assert stored is not None
    session = CentralSession(bytes.fromhex(stored["pair_key"]), bytes.fromhex(stored["key_id"]))
    answers: asyncio.Queue[bytes] = asyncio.Queue()
    client = make_client(lock_sim.address)
    await client.connect()
    try:
        await client.start_notify(
            gatt.CONTROL_POINT, lambda _c, data: answers.put_nowait(bytes(data))
        )

        async def exchange(frame: bytes) -> bytes:
            await client.write_gatt_char(gatt.CONTROL_POINT, frame, response=False)
            async with asyncio.timeout(3):
                return await answers.get()

        session.accept(await exchange(session.open_frame()))
        _, unlock = session.command(Opcode.UNLOCK)
        tampered = bytearray(unlock)
        tampered[8] ^= 0x40
        assert decode_frame(await exchange(bytes(tampered))) == ErrorFrame(Status.AUTH_FAILED)
        assert decode_frame(await exchange(unlock[:-3])) == ErrorFrame(Status.MALFORMED)
        for i in range(len(unlock)):  # every single-bit forgery of every byte is refused
            forged = bytearray(unlock)
            forged[i] ^= 0x01
            assert isinstance(decode_frame(await exchange(bytes(forged))), ErrorFrame)
        assert lock_sim.device.status().lock is LockState.LOCKED  # nothing moved
        session.receive(await exchange(unlock))
        assert lock_sim.device.status().lock is LockState.UNLOCKED
        lock_sim.switch("door", "open")
        session.receive(await answers.get())  # the door event
        lock_sim.switch("door", "close")
        session.receive(await answers.get())
        _, relock = session.command(Opcode.LOCK)
        session.receive(await exchange(relock))
        assert decode_frame(await exchange(unlock)) == ErrorFrame(Status.REPLAYED)
        assert lock_sim.device.status().lock is LockState.LOCKED
    finally:
        await client.disconnect()


async def test_command_without_session_is_refused(lock_sim: CarelockSimulator) -> None:
    answers: asyncio.Queue[bytes] = asyncio.Queue()
    client = make_client(lock_sim.address)
    await client.connect()
    try:
        await client.start_notify(
            gatt.CONTROL_POINT, lambda _c, data: answers.put_nowait(bytes(data))
        )
        frame = bytes([0x10, 0, 0, 0, 1]) + bytes(19)
        await client.write_gatt_char(gatt.CONTROL_POINT, frame, response=False)
        async with asyncio.timeout(3):
            assert decode_frame(await answers.get()) == ErrorFrame(Status.NO_SESSION)
    finally:
        await client.disconnect()


def test_the_registry_names_the_carelock_drivers() -> None:
    from drivers.registry import get_driver

    assert get_driver("carelock-lock") is CarelockLockDriver
    assert get_driver("carelock-keysafe") is CarelockKeysafeDriver
    assert (
        CarelockLockDriver.name == "carelock-lock"
        and CarelockKeysafeDriver.name == "carelock-keysafe"
    )
