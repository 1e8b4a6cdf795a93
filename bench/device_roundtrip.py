"""Unlock round trip through bleak + the loopback backend, per driver.

    .venv/bin/python bench/device_roundtrip.py --n 1000 [--delays 0,30] [--setup carelock-lock]

For each driver setup and each per-frame link delay *d* (applied by the simulator's
link to every frame in each direction; 30 ms = one BLE connection interval), runs
``--n`` unlocks on a connected, paired driver (a lock in between, not timed) and prints
p50 / p99 / max, the link frames each unlock took in each direction, the link round
trips per unlock, the modelled link time (round trips × 2 *d*) and the ratio
p99 / modelled (target ≤ 1.5). It also times ``--on-demand`` unlocks that first
connect (transport, discovery, subscriptions, session open) — the price of not
keeping the link.

Other drivers add themselves to :data:`SETUPS`: an async context manager factory
``(delay_ms) -> Rig`` that starts their simulator and yields a paired, connected driver.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import structlog

from drivers.base import Driver
from drivers.carelock import CarelockKeysafeDriver, CarelockLockDriver
from protocols.carelock import Kind
from protocols.device import Action
from simulators.carelock import CarelockSimulator
from simulators.gatt_server import GattServer
from simulators.link_faults import LinkFaults


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


@contextlib.asynccontextmanager
async def _carelock(kind: Kind, delay_ms: float) -> AsyncIterator[Rig]:
    async with CarelockSimulator(kind, pairing=True, faults=LinkFaults(delay_ms=delay_ms)) as sim:
        driver: Driver
        if kind is Kind.LOCK:
            driver = CarelockLockDriver("bench-lock", sim.address, secrets=MemorySecrets())
            rig = Rig(driver, sim.server)
        else:
            driver = CarelockKeysafeDriver("bench-safe", sim.address, secrets=MemorySecrets())
            rig = Rig(driver, sim.server, action=Action.OPEN, undo=None)
        sim.device.switch("battery", "100", sim.clock())
        await driver.pair()
        try:
            yield rig
        finally:
            await driver.disconnect()


#: name → factory(delay_ms) of a rig; other drivers (Nuki, ...) add their entry here
SETUPS: dict[str, Callable[[float], AbstractAsyncContextManager[Rig]]] = {
    "carelock-lock": lambda d: _carelock(Kind.LOCK, d),
    "carelock-keysafe": lambda d: _carelock(Kind.KEYSAFE, d),
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


async def run(setups: list[str], n: int, delays: list[float], on_demand: int) -> bool:
    ok = True
    header = (
        f"{'setup':18} {'mode':10} {'delay':>6} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
        f" {'frames c→d':>10} {'d→c':>5} {'round trips':>11} {'modelled':>9} {'p99/model':>9}"
    )
    print(header, flush=True)
    for name in setups:
        for delay in delays:
            for mode, count in (("connected", n), ("on-demand", on_demand)):
                if count <= 0:
                    continue
                async with SETUPS[name](delay) as rig:
                    await _measure(rig, min(20, count), on_demand=mode == "on-demand")  # warm up
                    times, f_in, f_out = await _measure(rig, count, on_demand=mode == "on-demand")
                times.sort()
                trips = round(f_in)  # every central→device frame waits for its answer
                modelled = trips * 2 * delay
                p99 = _pct(times, 99)
                ratio = f"{p99 / modelled:9.2f}" if modelled else f"{'-':>9}"
                print(
                    f"{name:18} {mode:10} {delay:6g} {count:5d} {statistics.median(times):8.2f}"
                    f" {p99:8.2f} {times[-1]:8.2f} {f_in:10.2f} {f_out:5.2f} {trips:11d}"
                    f" {modelled:9g} {ratio}",
                    flush=True,
                )
                if mode == "connected" and modelled and p99 > 1.5 * modelled:
                    ok = False
    print(
        "\nround trips: link frames central → device per action, each waiting for its answer; "
        "modelled = round trips × 2 × delay.\ntarget (connected): p99 ≤ 1.5 × modelled; "
        "the protocol minimum is 1 round trip per unlock."
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
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))  # warnings only
    delays = [float(d) for d in args.delays.split(",")]
    ok = asyncio.run(run(args.setup or list(SETUPS), args.n, delays, args.on_demand))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
