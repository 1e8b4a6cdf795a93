"""Real simulator subprocesses on loopback for the device tests and benches.

``async with SimProcess("lock", pairing=True) as sim:`` starts ``lockgw-sim lock`` on
free loopback ports and waits until its control channel answers; ``sim.address`` is
the ``loopback://`` address for the config and ``await sim.control(name, value)``
switches a fault or a state. Leaving stops the process (SIGTERM, then SIGKILL).

``SimProcess("lock", bluez=env, adapter="hci1")`` runs it as a BlueZ peripheral on that
adapter of a BlueZoo test bed (``tests/bluez_env.py``) instead: ``sim.address`` is then
the adapter's BLE address.

A carelock device stores a pairing only when a person confirms its code on the device:
:func:`pair_confirmed` is ``driver.pair()`` with that person, who presses confirm (or
what ``button`` says) once the code the device shows is the one the driver derived.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from bluez_env import BluezEnv

from drivers.base import Driver
from simulators.carelock import CarelockSimulator
from simulators.control import send_control

__all__ = ["SimProcess", "free_port", "lockgw_pair", "pair_confirmed", "press", "shown_code"]

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class SimProcess:
    def __init__(
        self, kind: str, *, pairing: bool = False, state: Path | None = None,
        extra: list[str] | None = None, bluez: BluezEnv | None = None, adapter: str = "hci1",
    ) -> None:
        self.kind = kind
        self.bluez = bluez
        self.adapter = adapter
        self.port = free_port()
        self.control_port = free_port()
        self.pairing = pairing
        self.state = state
        self.extra = extra or []
        self.proc: asyncio.subprocess.Process | None = None
        self._log: Any = None

    @property
    def address(self) -> str:
        if self.bluez is not None:
            return self.bluez.adapter(self.adapter).address
        return f"loopback://127.0.0.1:{self.port}"

    @property
    def control_address(self) -> str:
        return f"127.0.0.1:{self.control_port}"

    def argv(self) -> list[str]:
        argv = [sys.executable, "-c", "from simulators.cli import run; run()", self.kind,
                "--control", self.control_address]
        if self.bluez is not None:
            argv += ["--bluez", "--adapter", self.adapter]
        else:
            argv += ["--listen", f"127.0.0.1:{self.port}"]
        if self.pairing:
            argv.append("--pairing")
        if self.state is not None:
            argv += ["--state", str(self.state)]
        return argv + self.extra

    async def control(self, name: str, value: Any = None) -> Any:
        return await send_control(self.control_address, name, value)

    async def start(self) -> None:
        env = dict(os.environ if self.bluez is None else self.bluez.env(), PYTHONPATH=str(ROOT))
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv(), cwd=ROOT, env=env, stdout=self._log, stderr=self._log,
        )
        async with asyncio.timeout(20):
            while True:
                if self.proc.returncode is not None:
                    raise RuntimeError(
                        f"simulator exited {self.proc.returncode}: {self.output()}"
                    )
                try:
                    await send_control(self.control_address, "faults", timeout=1.0)
                    return
                except Exception:
                    await asyncio.sleep(0.05)

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(5):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
        self._log.close()

    def output(self) -> str:
        """What the simulator printed so far (for failure messages)."""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-4000:]

    async def __aenter__(self) -> SimProcess:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


#: a simulated carelock device: in this process, a process, or a control address
AtDevice = SimProcess | CarelockSimulator | str


async def shown_code(device: AtDevice) -> str | None:
    """The pairing code on the device's display (None: no pairing waits)."""
    if isinstance(device, CarelockSimulator):
        return device.device.pending_code
    control = device if isinstance(device, str) else device.control_address
    code = (await send_control(control, "state"))["pending_code"]
    return None if code is None else str(code)


async def press(device: AtDevice, button: str) -> None:
    """The device's button while a code is shown: ``confirm`` or ``reject``."""
    if isinstance(device, CarelockSimulator):
        device.press(button)
    else:
        control = device if isinstance(device, str) else device.control_address
        await send_control(control, "press", button)


async def pair_confirmed(driver: Driver, device: AtDevice, *, button: str = "confirm") -> str:
    """``driver.pair()`` with an installer at the device: when the driver has its code,
    they read the device's display and press ``button`` if it shows the same code
    (``reject`` if not). Returns the code; raises what ``pair`` raises."""
    heard: asyncio.Queue[str] = asyncio.Queue()
    driver.on_pairing_code = heard.put_nowait
    pairing = asyncio.create_task(driver.pair())
    code = asyncio.create_task(heard.get())
    try:
        await asyncio.wait({pairing, code}, return_when=asyncio.FIRST_COMPLETED)
        if not code.done():
            pairing.result()  # pair ended before a code: raise what it raised
            raise AssertionError("pairing ended without a code")
        shown = await shown_code(device)
        await press(device, button if shown == code.result() else "reject")
        await pairing
        return code.result()
    finally:
        for task in (pairing, code):
            task.cancel()
        await asyncio.gather(pairing, code, return_exceptions=True)
        driver.on_pairing_code = None


async def lockgw_pair(
    argv: list[str], device: AtDevice, *, button: str | None = "confirm"
) -> tuple[int, str | None]:
    """``lockgw ARGV`` (a ``pair``, in this process) with the installer at the device: once
    the device shows a code they press ``button`` (None: nobody does). Returns the exit
    code and the code the device showed; the caller checks ``lockgw pair`` printed the
    same one (``Pairing code: …``)."""
    from gateway.cli import main

    task = asyncio.create_task(main(argv))
    shown: str | None = None
    try:
        while not task.done() and button is not None:
            shown = await shown_code(device)
            if shown is not None:
                await press(device, button)
                break
            await asyncio.wait({task}, timeout=0.05)
        return await task, shown
    finally:
        task.cancel()
