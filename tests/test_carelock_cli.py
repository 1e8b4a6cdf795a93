"""``lockgw-sim lock`` / ``keysafe`` / ``switch`` as real subprocesses, paired by the real driver."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from drivers.carelock import CarelockKeysafeDriver, CarelockLockDriver
from protocols.device import Action, DoorState, LockState
from simulators.cli import main as sim_main
from tests.simprocs import pair_confirmed

LOCKGW_SIM = str(Path(sys.executable).parent / "lockgw-sim")


class MemorySecrets:
    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    def load(self, device_id: str) -> dict[str, Any] | None:
        return self.data.get(device_id)

    def save(self, device_id: str, secrets: dict[str, Any]) -> None:
        self.data[device_id] = dict(secrets)


async def _start(*args: str) -> tuple[asyncio.subprocess.Process, dict[str, Any]]:
    """Start a simulator; returns it and its JSON ready line (address, control)."""
    proc = await asyncio.create_subprocess_exec(
        LOCKGW_SIM, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    assert proc.stdout is not None
    async with asyncio.timeout(20):
        while True:
            line = (await proc.stdout.readline()).decode()
            if not line:
                raise AssertionError(f"simulator exited with {await proc.wait()}")
            if line.startswith("{") and (ready := json.loads(line)).get("ready"):
                return proc, ready


async def _switch(control: str, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        LOCKGW_SIM,
        "switch",
        "--control",
        control,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, (out + err).decode()


async def _stop(proc: asyncio.subprocess.Process) -> int:
    proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(10):
        return await proc.wait()


@pytest.mark.slow
async def test_technician_starts_pairs_and_switches_a_lock(tmp_path: Path) -> None:
    state = tmp_path / "front-lock.json"
    args = ("lock", "--listen", "127.0.0.1:0", "--control", "127.0.0.1:0", "--state", str(state))
    proc, ready = await _start(*args, "--pairing", "--delay", "1")
    try:
        assert ready["device"] == "carelock-lock"
        address, control = ready["address"], ready["control"]
        secrets = MemorySecrets()
        driver = CarelockLockDriver("front-lock", address, secrets=secrets)
        pairing = asyncio.create_task(driver.pair())
        assert proc.stdout is not None
        async with asyncio.timeout(10):  # the device shows its code and waits for the button
            while not (line := (await proc.stdout.readline()).decode()).startswith("pairing code"):
                pass
        assert "press confirm" in line and f"--control {control} " in line
        assert not pairing.done() and not driver.is_paired  # nothing stored before the button
        code, out = await _switch(control, "state")
        assert code == 0 and json.loads(out)["pending_code"] == driver.pairing_code
        # the installer compares the two codes, and presses the button
        assert f"pairing code {driver.pairing_code}:" in line
        code, out = await _switch(control, "press", "confirm")
        assert code == 0 and "confirmed and stored" in json.loads(out)["pressed"], out
        await pairing
        async with asyncio.timeout(10):
            while not (line := (await proc.stdout.readline()).decode()).startswith("paired: code"):
                pass
        assert f"code {driver.pairing_code} confirmed" in line
        code, out = await _switch(control, "press", "confirm")  # no code shown now
        assert code == 1 and "no pairing code is shown" in out
        assert (await driver.execute(Action.UNLOCK)).lock is LockState.UNLOCKED
        code, out = await _switch(control, "door", "open")
        assert code == 0 and json.loads(out)["door"] == "open"
        code, out = await _switch(control, "jam", "maybe")
        assert code == 1 and "on or off" in out
        code, out = await _switch(control)
        assert code == 0 and json.loads(out)["lock"] == "unlocked"
        assert json.loads(out)["serial"].startswith("CL1-")
        await driver.disconnect()
    finally:
        assert await _stop(proc) == 0
    # restarted from its state file: still unlocked, door open, still paired
    proc, ready = await _start(*args)
    try:
        driver = CarelockLockDriver("front-lock", ready["address"], secrets=secrets)
        state_now = await driver.refresh()
        assert (state_now.lock, state_now.door) == (LockState.UNLOCKED, DoorState.OPEN)
        await driver.disconnect()
    finally:
        assert await _stop(proc) == 0


@pytest.mark.slow
async def test_keysafe_cli_and_unreachable_control() -> None:
    proc, ready = await _start(
        "keysafe", "--listen", "127.0.0.1:0", "--control", "127.0.0.1:0", "--pairing"
    )
    try:
        driver = CarelockKeysafeDriver("key-safe", ready["address"], secrets=MemorySecrets())
        await pair_confirmed(driver, ready["control"])
        assert (await driver.execute(Action.OPEN)).compartment == "open"
        await driver.disconnect()
    finally:
        assert await _stop(proc) == 0
    code, out = await _switch(ready["control"], "jam", "on")
    assert code == 1 and "did not answer" in out


async def test_bad_listen_address_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert await sim_main(["lock", "--listen", "nowhere", "--delay", "5"]) == 2
    assert "host:port" in capsys.readouterr().err
