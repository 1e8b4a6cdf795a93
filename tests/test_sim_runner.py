"""A simulator process: --listen/--control, the ready line, faults from `lockgw-sim fault`, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import textwrap

import pytest
from bleak import BleakClient

from drivers.ble import make_client
from simulators.cli import main as sim_main
from simulators.control import send_control

DEVICE = textwrap.dedent(
    """
    import argparse, asyncio, sys
    from simulators.gatt_server import GattServer
    from simulators.runner import add_device_arguments, listen_kwargs, run_device

    async def main(argv):
        parser = argparse.ArgumentParser()
        add_device_arguments(parser, default_port=0)
        args = parser.parse_args(argv)
        server = GattServer("proc-device", **listen_kwargs(args))
        level = server.add_service(0x180F).add_characteristic(0x2A19, value=b"\\x64", notify=True)
        state = {"battery": 100}

        async def battery(value):
            if not isinstance(value, int) or not 0 <= value <= 100:
                raise ValueError("battery takes 0..100")
            state["battery"] = value
            level.value = bytes([value])
            await server.notify(level, level.value)
            return state

        return await run_device(server, args, controls=lambda c: c.register("battery", battery, "set the level"))

    sys.exit(asyncio.run(main(sys.argv[1:])))
    """
)


async def _ready(proc: asyncio.subprocess.Process) -> dict[str, str]:
    assert proc.stdout is not None
    async with asyncio.timeout(20):
        while True:
            line = await proc.stdout.readline()
            if not line:
                raise AssertionError("the simulator exited before it was ready")
            if line.startswith(b'{"ready"'):
                return json.loads(line)  # type: ignore[no-any-return]


async def test_simulator_process_is_driven_through_its_control_port(
    capsys: pytest.CaptureFixture[str],
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        DEVICE,
        "--listen",
        "127.0.0.1:0",
        "--control",
        "127.0.0.1:0",
        "--delay-ms",
        "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        ready = await _ready(proc)
        assert ready["device"] == "proc-device" and ready["address"].startswith(
            "loopback://127.0.0.1:"
        )
        assert (await send_control(ready["control"], "faults"))["delay_ms"] == 1
        lost = asyncio.Event()
        client: BleakClient = make_client(
            ready["address"], disconnected_callback=lambda _c: lost.set()
        )
        await client.connect()
        got: asyncio.Queue[bytearray] = asyncio.Queue()
        await client.start_notify("2a19", lambda _c, d: got.put_nowait(d))
        assert await sim_main(["fault", "--control", ready["control"], "battery", "15"]) == 0
        assert await asyncio.wait_for(got.get(), 5) == b"\x0f"
        assert await client.read_gatt_char("2a19") == b"\x0f"
        assert await sim_main(["fault", "--control", ready["control"], "drop"]) == 0
        await asyncio.wait_for(lost.wait(), 5)
        await client.connect()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        for _ in range(500):  # the goodbye of an orderly stop reaches the central
            if not client.is_connected:
                break
            await asyncio.sleep(0.01)
        assert not client.is_connected
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
