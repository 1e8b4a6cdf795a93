"""drivers/nuki.py against the Nuki simulator over the loopback bleak backend."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from drivers.nuki import NukiDriver, NukiPairingRefused, NukiRefused
from protocols.device import Action, DeviceState
from protocols.errors import DeviceFailed, PairingError
from protocols.events import DoorState, LockState
from protocols.nuki import ErrorCode
from simulators.nuki import NukiSimulator


class MemorySecrets:
    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    def load(self, device_id: str) -> dict[str, Any] | None:
        return self.data.get(device_id)

    def save(self, device_id: str, secrets: dict[str, Any]) -> None:
        self.data[device_id] = dict(secrets)


@pytest.fixture
async def sim() -> AsyncIterator[NukiSimulator]:
    async with NukiSimulator(pairing=True, motor_ms=20) as s:
        yield s


@pytest.fixture
async def paired(sim: NukiSimulator) -> AsyncIterator[NukiDriver]:
    driver = NukiDriver("front-lock", sim.address, secrets=MemorySecrets(), timeout=5)
    async with driver:
        await driver.pair()
        yield driver


async def test_pair_stores_credentials_and_the_lock_knows_them(sim: NukiSimulator) -> None:
    store = MemorySecrets()
    driver = NukiDriver("front-lock", sim.address, secrets=store, timeout=5)
    assert driver.is_paired is False
    async with driver:
        await driver.pair()
    saved = store.data["front-lock"]
    auth = sim.lock.authorizations[bytes.fromhex(saved["auth_id"])]
    assert bytes.fromhex(saved["shared_key"]) == auth.key
    assert bytes.fromhex(saved["lock_public_key"]) == sim.lock.keypair.public
    assert "secret" not in saved and driver.is_paired


async def test_unlock_unlatch_lock_return_the_confirmed_state(
    paired: NukiDriver, sim: NukiSimulator
) -> None:
    state = await paired.execute(Action.UNLOCK)
    assert state.lock is LockState.UNLOCKED and sim.lock.lock_state.name == "UNLOCKED"
    assert (state.door, state.battery, state.battery_critical) == (DoorState.CLOSED, 84, False)
    assert (await paired.execute(Action.UNLATCH)).lock is LockState.UNLATCHED
    assert (await paired.execute(Action.LOCK)).lock is LockState.LOCKED


async def test_refresh_reports_door_and_critical_battery(
    paired: NukiDriver, sim: NukiSimulator
) -> None:
    await sim.set_door(True)
    await sim.set_battery(6, critical=True)
    state = await paired.refresh()
    assert (state.lock, state.door, state.battery, state.battery_critical) == (
        LockState.LOCKED,
        DoorState.OPEN,
        6,
        True,
    )


async def test_door_opening_arrives_as_an_unsolicited_event(
    paired: NukiDriver, sim: NukiSimulator
) -> None:
    await paired.refresh()  # the lock pushes state to a session it has authenticated
    events = paired.events()
    await sim.set_door(True)
    async with asyncio.timeout(5):
        state: DeviceState = await anext(events)
    assert state.door is DoorState.OPEN


async def test_device_info_gives_model_serial_firmware_for_the_inventory(
    paired: NukiDriver, sim: NukiSimulator
) -> None:
    info = await paired.device_info()
    assert info.manufacturer == "Nuki Home Solutions"
    assert info.model == "Nuki Smart Lock 3.0/4.0"
    assert info.serial == f"{sim.lock.nuki_id:08X}"
    assert info.firmware == "3.9.8"


async def test_jammed_motor_fails_with_motor_blocked_and_reports_jammed(
    paired: NukiDriver, sim: NukiSimulator
) -> None:
    await sim.set_jammed(True)
    events = paired.events()
    with pytest.raises(NukiRefused) as err:
        await paired.execute(Action.UNLOCK)
    assert err.value.code is ErrorCode.K_ERROR_MOTOR_BLOCKED
    assert isinstance(err.value, DeviceFailed) and err.value.device_id == "front-lock"
    async with asyncio.timeout(5):
        assert (await anext(events)).lock is LockState.JAMMED
    await sim.set_jammed(False)
    assert (await paired.execute(Action.UNLOCK)).lock is LockState.UNLOCKED


async def test_pairing_outside_pairing_mode_is_refused_with_a_hint(sim: NukiSimulator) -> None:
    sim.set_pairing(False)
    async with NukiDriver("front-lock", sim.address, secrets=MemorySecrets(), timeout=5) as driver:
        with pytest.raises(NukiPairingRefused) as err:
            await driver.pair()
    assert err.value.code is ErrorCode.P_ERROR_NOT_PAIRING
    assert "pairing mode" in str(err.value)


async def test_an_unpaired_driver_says_to_pair(sim: NukiSimulator) -> None:
    async with NukiDriver("front-lock", sim.address, secrets=MemorySecrets(), timeout=5) as driver:
        with pytest.raises(PairingError, match="lockgw pair"):
            await driver.execute(Action.UNLOCK)


async def test_a_wrong_stored_key_is_refused_not_authorized(
    paired: NukiDriver, sim: NukiSimulator
) -> None:
    stored = paired.secrets.load("front-lock")
    assert stored is not None
    paired.secrets.save("front-lock", {**stored, "shared_key": "00" * 32})
    with pytest.raises(NukiRefused) as err:
        await paired.execute(Action.UNLOCK)
    assert err.value.code is ErrorCode.K_ERROR_NOT_AUTHORIZED
    assert sim.lock.lock_state.name == "LOCKED"


async def test_driver_reconnects_after_the_link_drops(
    paired: NukiDriver, sim: NukiSimulator
) -> None:
    await paired.refresh()
    assert sim.server.drop_links() == 1
    async with asyncio.timeout(5):
        while paired.is_connected:  # noqa: ASYNC110 - the driver offers no event for this
            await asyncio.sleep(0.01)
    assert (await paired.execute(Action.UNLOCK)).lock is LockState.UNLOCKED


# -- the technician's simulator: a real process, its control channel, its state file ------
async def _start_sim(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    import sys
    from pathlib import Path

    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "lockgw-sim"),
        "nuki",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    async with asyncio.timeout(20):
        while True:
            line = (await proc.stdout.readline()).decode()
            if not line:
                raise AssertionError(f"simulator exited: {(await proc.stderr.read()).decode()}")  # type: ignore[union-attr]
            if line.startswith("{"):
                ready = json.loads(line)
                assert ready["ready"] is True and ready["device"] == "Nuki_SIM"
                return proc, str(ready["address"])


async def _stop(proc: asyncio.subprocess.Process) -> None:
    proc.terminate()
    async with asyncio.timeout(10):
        await proc.wait()


@pytest.mark.slow
async def test_simulator_process_with_control_channel_and_state_file(tmp_path: Any) -> None:
    from simulators.broker import free_port
    from simulators.control import send_control

    port, cport = free_port(), free_port()
    state = tmp_path / "nuki.json"
    args = (
        "--listen",
        f"127.0.0.1:{port}",
        "--control",
        f"127.0.0.1:{cport}",
        "--state",
        str(state),
        "--motor",
        "10",
    )
    proc, address = await _start_sim(*args, "--pairing")
    store = MemorySecrets()
    try:
        async with NukiDriver("front-lock", address, secrets=store, timeout=5) as driver:
            await driver.pair()
            result = await send_control(f"127.0.0.1:{cport}", "jam", True)
            assert result["jammed"] is True
            with pytest.raises(NukiRefused):
                await driver.execute(Action.UNLOCK)
            await send_control(f"127.0.0.1:{cport}", "jam", False)
            assert (await driver.execute(Action.UNLOCK)).lock is LockState.UNLOCKED
    finally:
        await _stop(proc)
    # the lock keeps its keys, authorizations and state across a restart (no --pairing now)
    proc, address = await _start_sim(*args)
    try:
        async with NukiDriver("front-lock", address, secrets=store, timeout=5) as driver:
            state_now = await driver.refresh()
            assert state_now.lock is LockState.UNLOCKED
            assert (await driver.execute(Action.LOCK)).lock is LockState.LOCKED
    finally:
        await _stop(proc)


async def test_a_device_without_the_nuki_1_to_4_services_is_refused_in_words() -> None:
    from simulators.gatt_server import GattServer

    server = GattServer("Nuki_Ultra")  # an Ultra pairs on a92ee300-…, which we do not speak
    server.add_service("a92ee300-5501-11e4-916c-0800200c9a66").add_characteristic(
        "a92ee301-5501-11e4-916c-0800200c9a66", write=lambda c, d: None, indicate=True
    )
    async with server:
        driver = NukiDriver("front-lock", server.address, secrets=MemorySecrets(), timeout=5)
        with pytest.raises(DeviceFailed, match="not supported"):
            await driver.connect()
        assert not driver.is_connected


async def test_a_link_lost_during_an_action_fails_at_once_as_unavailable() -> None:
    from protocols.errors import DeviceUnavailable

    async with NukiSimulator(pairing=True, motor_ms=3000) as sim:
        driver = NukiDriver("front-lock", sim.address, secrets=MemorySecrets(), timeout=30)
        async with driver:
            await driver.pair()
            action = asyncio.create_task(driver.execute(Action.UNLOCK))
            async with asyncio.timeout(10):
                while sim.lock.lock_state.name != "UNLOCKED":  # noqa: ASYNC110 - the lock took the action
                    await asyncio.sleep(0.01)
            sim.server.drop_links()  # the motor is still turning: COMPLETE never comes
            with pytest.raises(DeviceUnavailable) as err:
                await action
            # the link's end, not the 30 s timeout (the drop may also hit the write's answer)
            assert "no answer" not in str(err.value)
