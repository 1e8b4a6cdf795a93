"""Nuki unlock round trips, our driver vs pyNukiBT (the per-driver table is bench/device_roundtrip.py).

Run: ``.venv/bin/python bench/nuki_roundtrip.py [--n 200]``

For each per-frame link delay (0 ms; 30 ms ≈ one BLE connection interval, added to every
loopback GATT frame in each direction) it times ``NukiDriver.execute(UNLOCK)`` (alternating
with LOCK so every action moves the bolt) and prints writes and GATT frames per unlock and
p50/p99 latency. The baseline is pyNukiBT — an independent Nuki client — doing the same
Lock Action on the same simulator (``lock_action(..., wait_for_completed=True)``); the
ratio is ours / pyNukiBT. The motor time is 0 so the figures are protocol + link only
(a real lock adds about a second of motor).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import time
from typing import Any

import bleak_retry_connector
import nacl.public
import structlog
from bleak.backends.device import BLEDevice
from pyNukiBT import NukiDevice
from pyNukiBT import nuki as pynuki_module

from drivers.ble import client_backend_for
from drivers.nuki import NukiDriver
from protocols.device import Action
from simulators.link_faults import LinkFaults
from simulators.nuki import NukiSimulator


class _Secrets:
    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    def load(self, device_id: str) -> dict[str, Any] | None:
        return self.data.get(device_id)

    def save(self, device_id: str, secrets: dict[str, Any]) -> None:
        self.data[device_id] = secrets


def _pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


async def ours(delay_ms: float, n: int) -> dict[str, float]:
    async with NukiSimulator(pairing=True, motor_ms=0, faults=LinkFaults()) as sim:
        driver = NukiDriver("bench", sim.address, secrets=_Secrets(), timeout=30)
        async with driver:
            await driver.pair()
            await driver.refresh()
            sim.faults.delay_ms = delay_ms
            times: list[float] = []
            writes0, rx0, tx0 = driver.writes, sim.server.frames_received, sim.server.frames_sent
            for i in range(n):
                action = Action.UNLOCK if i % 2 == 0 else Action.LOCK
                t0 = time.perf_counter()
                await driver.execute(action)
                times.append(time.perf_counter() - t0)
            return {
                "writes": (driver.writes - writes0) / n,
                "frames": (sim.server.frames_received - rx0 + sim.server.frames_sent - tx0) / n,
                "p50": _pct(times, 0.5) * 1000,
                "p99": _pct(times, 0.99) * 1000,
                "mean": statistics.fmean(times) * 1000,
            }


async def pynukibt(delay_ms: float, n: int) -> dict[str, float]:
    original = bleak_retry_connector.establish_connection

    async def establish_connection(
        cls: type, device: BLEDevice, name: str, *a: Any, **kw: Any
    ) -> Any:
        backend = client_backend_for(device)
        return await functools.partial(original, backend=backend)(cls, device, name, *a, **kw)

    pynuki_module.establish_connection = establish_connection  # the one patch: choose the backend
    async with NukiSimulator(pairing=True, motor_ms=0) as sim:
        sk = nacl.public.PrivateKey.generate()
        dev = NukiDevice(
            sim.address,
            None,
            None,
            bytes(sk.public_key),
            bytes(sk),
            0x1234,
            "bench",
            ble_device=BLEDevice(sim.address, "Nuki_SIM", None),
        )
        await dev.connect()
        await dev.pair()
        await dev.update_state()
        sim.faults.delay_ms = delay_ms
        times: list[float] = []
        for i in range(n):
            action = dev._const.LockAction.UNLOCK if i % 2 == 0 else dev._const.LockAction.LOCK
            t0 = time.perf_counter()
            await dev.lock_action(action, wait_for_completed=True)
            times.append(time.perf_counter() - t0)
        await dev.disconnect()
        return {"p50": _pct(times, 0.5) * 1000, "p99": _pct(times, 0.99) * 1000}


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--n", type=int, default=200, help="actions per delay at 0 ms (a quarter at 30 ms)"
    )
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    import logging

    logging.disable(logging.CRITICAL)  # the simulators log every link; the table is the output
    print("nuki unlock round trip (driver.execute → Status COMPLETE), motor 0 ms")
    print(
        f"{'delay':>6} {'writes':>7} {'frames':>7} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'pyNukiBT p50':>13} {'p99':>7} {'ratio p50':>10}"
    )
    for delay, n in ((0.0, args.n), (30.0, max(10, args.n // 4))):
        o = await ours(delay, n)
        b = await pynukibt(delay, n)
        print(
            f"{delay:>5.0f}ms {o['writes']:>7.1f} {o['frames']:>7.1f} {o['p50']:>8.2f} {o['p99']:>8.2f} "
            f"{b['p50']:>13.2f} {b['p99']:>7.2f} {o['p50'] / b['p50']:>10.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(__import__("sys").argv[1:])))
