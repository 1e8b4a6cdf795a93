"""Unlock round trip through bleak + the loopback backend, per driver (and over BlueZ).

    .venv/bin/python bench/device_roundtrip.py --n 1000 [--delays 0,30] [--setup carelock-lock]
    .venv/bin/python bench/device_roundtrip.py --bluez ...   # the BlueZ path beside loopback

For each driver setup and each per-frame link delay *d* (applied by the simulator's
link to every frame in each direction; 30 ms = one BLE connection interval), runs
``--n`` unlocks on a connected, paired driver (a lock in between, not timed) and prints
p50 / p99 / max, the link frames each unlock took in each direction, the link round
trips per unlock, the modelled link time (round trips × 2 *d*) and the ratio
p99 / modelled (target ≤ 1.5). It also times ``--on-demand`` unlocks that first
connect (transport, discovery, subscriptions, session open) — the price of not
keeping the link.

With ``--bluez`` every row is measured twice in the same run: over the loopback
transport and over BlueZ's D-Bus API (a private bus with BlueZoo, ``tests/bluez_env.py``;
the simulator a BlueZ peripheral on hci1, the driver on hci0 with bleak's BlueZ backend and
bleak-retry-connector), followed by the ratio BlueZ / loopback: the cost of the D-Bus hops
(driver → dbus-daemon → BlueZ → dbus-daemon → device application and back) that a hub
pays on top of the radio. BlueZoo has no radio timing: the simulator's per-frame delay
stands in for the air on both transports.

Other drivers add themselves to :data:`SETUPS`: an async context manager factory
``(delay_ms, bluez) -> Rig`` that starts their simulator and yields a paired, connected
driver.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # simprocs' neighbours
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import structlog

from drivers.base import Driver
from drivers.carelock import CarelockKeysafeDriver, CarelockLockDriver
from drivers.nuki import NukiDriver
from protocols.carelock import Kind
from protocols.device import Action
from simulators.carelock import CarelockSimulator
from simulators.gatt_server import GattServer
from simulators.link_faults import LinkFaults
from simulators.nuki import NukiSimulator
from tests.simprocs import pair_confirmed


class MemorySecrets:
    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    def load(self, device_id: str) -> dict[str, Any] | None:
        return self.data.get(device_id)

    def save(self, device_id: str, secrets: dict[str, Any]) -> None:
        self.data[device_id] = dict(secrets)


@dataclass
class Rig:
    """What a setup yields: a paired, connected driver and the simulator's GATT server."""

    driver: Driver
    server: GattServer
    #: the timed action, and the untimed one that undoes it (None: nothing to undo)
    action: Action = Action.UNLOCK
    undo: Action | None = Action.LOCK


#: over BlueZ: the simulator's adapter and the driver's
SIM_ADAPTER, GATEWAY_ADAPTER = "hci1", "hci0"


@contextlib.asynccontextmanager
async def _carelock(kind: Kind, delay_ms: float, bluez: bool) -> AsyncIterator[Rig]:
    async with CarelockSimulator(
        kind, pairing=True, faults=LinkFaults(delay_ms=delay_ms),
        bluez_adapter=SIM_ADAPTER if bluez else None,
    ) as sim:
        driver: Driver
        if kind is Kind.LOCK:
            driver = CarelockLockDriver(
                "bench-lock", sim.address, secrets=MemorySecrets(), timeout=10,
                adapter=GATEWAY_ADAPTER,
            )
            rig = Rig(driver, sim.server)
        else:
            driver = CarelockKeysafeDriver(
                "bench-safe", sim.address, secrets=MemorySecrets(), timeout=10,
                adapter=GATEWAY_ADAPTER,
            )
            rig = Rig(driver, sim.server, action=Action.OPEN, undo=None)
        sim.device.switch("battery", "100", sim.clock())
        await pair_confirmed(driver, sim)  # the code confirmed on the device
        try:
            yield rig
        finally:
            await driver.disconnect()


@contextlib.asynccontextmanager
async def _nuki(delay_ms: float, bluez: bool) -> AsyncIterator[Rig]:
    # motor 0 ms: the figures are protocol + link (a real Nuki adds 1–3 s of motor);
    # no beacon over BlueZ (BlueZoo cannot carry manufacturer data)
    async with NukiSimulator(
        pairing=True, motor_ms=0, faults=LinkFaults(delay_ms=delay_ms),
        bluez_adapter=SIM_ADAPTER if bluez else None, beacon=not bluez,
    ) as sim:
        driver = NukiDriver(
            "bench-nuki", sim.address, secrets=MemorySecrets(), timeout=30,
            adapter=GATEWAY_ADAPTER,
        )
        await driver.pair()
        try:
            yield Rig(driver, sim.server)
        finally:
            await driver.disconnect()


#: name → factory(delay_ms, bluez) of a rig; other drivers add their entry here
SETUPS: dict[str, Callable[[float, bool], AbstractAsyncContextManager[Rig]]] = {
    "carelock-lock": lambda d, b: _carelock(Kind.LOCK, d, b),
    "carelock-keysafe": lambda d, b: _carelock(Kind.KEYSAFE, d, b),
    "nuki": _nuki,
}


def _pct(sorted_ms: list[float], p: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, round(p / 100 * (len(sorted_ms) - 1)))]


async def _measure(rig: Rig, n: int, *, on_demand: bool) -> tuple[list[float], float, float]:
    """n timed actions; returns times (ms) and mean link frames in / out per action."""
    times: list[float] = []
    frames_in = frames_out = 0
    for _ in range(n):
        if rig.undo is not None:
            await rig.driver.execute(rig.undo)
        if on_demand:
            await rig.driver.disconnect()
        await asyncio.sleep(0)  # let notifications of the undo settle before counting
        rx, tx = rig.server.frames_received, rig.server.frames_sent
        t0 = time.perf_counter()
        await rig.driver.execute(rig.action)
        times.append((time.perf_counter() - t0) * 1000)
        frames_in += rig.server.frames_received - rx
        frames_out += rig.server.frames_sent - tx
    return times, frames_in / n, frames_out / n


async def run(
    setups: list[str], n: int, delays: list[float], on_demand: int, bluez: bool = False
) -> bool:
    ok = True
    header = (
        f"{'setup':18} {'path':8} {'mode':10} {'delay':>6} {'n':>5} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'max ms':>8} {'frames c→d':>10} {'d→c':>5} {'round trips':>11} {'modelled':>9}"
        f" {'p99/model':>9}"
    )
    print(header, flush=True)
    paths = ("loopback", "bluez") if bluez else ("loopback",)
    for name in setups:
        for delay in delays:
            for mode, count in (("connected", n), ("on-demand", on_demand)):
                if count <= 0:
                    continue
                p50s: dict[str, tuple[float, float]] = {}
                for path in paths:
                    async with SETUPS[name](delay, path == "bluez") as rig:
                        on = mode == "on-demand"
                        await _measure(rig, min(20, count), on_demand=on)  # warm up
                        times, f_in, f_out = await _measure(rig, count, on_demand=on)
                    times.sort()
                    trips = round(f_in)  # every central→device frame waits for its answer
                    modelled = trips * 2 * delay
                    p99 = _pct(times, 99)
                    p50s[path] = (statistics.median(times), p99)
                    ratio = f"{p99 / modelled:9.2f}" if modelled else f"{'-':>9}"
                    print(
                        f"{name:18} {path:8} {mode:10} {delay:6g} {count:5d}"
                        f" {statistics.median(times):8.2f} {p99:8.2f} {times[-1]:8.2f}"
                        f" {f_in:10.2f} {f_out:5.2f} {trips:11d} {modelled:9g} {ratio}",
                        flush=True,
                    )
                    if mode == "connected" and path == "loopback" and modelled and p99 > 1.5 * modelled:
                        ok = False
                if bluez:
                    (lp50, lp99), (bp50, bp99) = p50s["loopback"], p50s["bluez"]
                    print(
                        f"{'':18} {'ratio':8} {mode:10} {delay:6g} {'':5}"
                        f" {bp50 / lp50:7.2f}x {bp99 / lp99:7.2f}x   (BlueZ / loopback;"
                        f" +{bp50 - lp50:.2f} ms at p50)",
                        flush=True,
                    )
    print(
        "\nround trips: link frames central → device per action, each waiting for its answer; "
        "modelled = round trips × 2 × delay.\ntarget (connected, loopback): p99 ≤ 1.5 × "
        "modelled; the protocol minimum is 1 round trip per unlock (carelock); Nuki's protocol "
        "needs 2 (Request Data(Challenge), then Lock Action), both written with response."
    )
    if bluez:
        print(
            "bluez: the same driver and simulator over BlueZ's D-Bus API (BlueZoo on a private "
            "bus): the ratio is what the D-Bus hops add; no target (a real radio adds its own)."
        )
    print("target met" if ok else "TARGET MISSED")
    return ok


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="timed actions per setup and delay")
    parser.add_argument(
        "--delays", default="0,30", help="per-frame link delays, ms, comma-separated"
    )
    parser.add_argument(
        "--setup", action="append", choices=sorted(SETUPS), help="default: every setup"
    )
    parser.add_argument(
        "--on-demand", type=int, default=50, help="timed connect-on-demand actions (0 = skip)"
    )
    parser.add_argument(
        "--bluez", action="store_true",
        help="also measure every row over BlueZ's D-Bus API (BlueZoo on a private bus)",
    )
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))  # warnings only
    delays = [float(d) for d in args.delays.split(",")]
    setups = args.setup or list(SETUPS)
    if not args.bluez:
        ok = asyncio.run(run(setups, args.n, delays, args.on_demand))
        return 0 if ok else 1
    from tests.bluez_env import BluezEnv

    with BluezEnv(adapters=2) as env:
        os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = env.bus_address
        ok = asyncio.run(run(setups, args.n, delays, args.on_demand, bluez=True))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
