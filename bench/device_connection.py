"""Keep connected, or connect on demand? Unlock latency through the device manager.

Starts a real carelock lock simulator (a subprocess, the loopback BLE transport), pairs
it, then runs the same unlock/lock commands through ``gateway.devices.DeviceManager``
with ``connection = "keep"`` and with ``connection = "on_demand"``, with 0 ms and with
30 ms added per link frame (one BLE connection interval). Prints p50 / p99 per command,
the ratio on-demand / keep (keep is the baseline), and how long a door opening takes to
reach the gateway in each mode (keep: a notification; on demand: the next health poll).

    .venv/bin/python bench/device_connection.py [--commands 200] [--on-demand-commands 60]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # tests/simprocs imports its neighbours

from gateway.config import Config, DeviceConfig, SiteConfig  # noqa: E402
from gateway.devices import DeviceManager, FileSecretStore, make_driver  # noqa: E402
from protocols.device import Action  # noqa: E402
from protocols.events import Envelope, EventBody  # noqa: E402
from tests.simprocs import SimProcess, pair_confirmed  # noqa: E402


class NullSink:
    def __init__(self) -> None:
        self.seq = 0
        self.door_open_at: float | None = None
        self.door_opened = asyncio.Event()

    async def emit(self, body: EventBody) -> Envelope:
        self.seq += 1
        if body.type == "lock.state" and body.door_state == "open" and self.door_open_at is None:
            self.door_open_at = time.perf_counter()
            self.door_opened.set()
        return Envelope(id=str(self.seq), seq=self.seq, ts="2026-01-01T00:00:00.000Z",
                        site="bench", body=body)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


async def run_mode(
    sim: SimProcess, data: Path, mode: str, n: int, health_interval: float
) -> dict[str, Any]:
    dev = DeviceConfig(
        id="lock", door="front", driver="carelock-lock", address=sim.address,
        connection=mode,  # type: ignore[arg-type]
        command_timeout=10.0, health_interval=health_interval,
    )
    cfg = Config(site=SiteConfig(id="bench", data_dir=data), devices=[dev])
    sink = NullSink()
    times: list[float] = []
    async with DeviceManager.from_config(cfg, sink) as mgr:
        await mgr.refresh("front")  # first contact (connect) outside the figures
        await asyncio.sleep(0.2)
        for i in range(n):
            action = Action.UNLOCK if i % 2 == 0 else Action.LOCK
            t0 = time.perf_counter()
            await mgr.execute("front", action)
            times.append(time.perf_counter() - t0)
        # how long until the gateway knows the door was opened
        await mgr.execute("front", Action.UNLOCK)
        await asyncio.sleep(0.2)
        t0 = time.perf_counter()
        await sim.control("door", "open")
        async with asyncio.timeout(health_interval * 3 + 10):
            await sink.door_opened.wait()
        assert sink.door_open_at is not None
        seen = sink.door_open_at - t0
        await sim.control("door", "close")
        await mgr.execute("front", Action.LOCK)
    return {
        "p50": statistics.median(times) * 1000,
        "p99": pct(times, 99) * 1000,
        "n": n,
        "door_seen": seen * 1000,
    }


async def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commands", type=int, default=200, help="commands per keep run")
    ap.add_argument("--on-demand-commands", type=int, default=60)
    ap.add_argument("--health-interval", type=float, default=2.0,
                    help="poll interval for the door-opening figure (default 60 in a real config)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        async with SimProcess("lock", pairing=True) as sim:
            dev = DeviceConfig(id="lock", door="front", driver="carelock-lock",
                               address=sim.address)
            driver = make_driver(dev, FileSecretStore(data))
            await pair_confirmed(driver, sim)  # the code confirmed on the device
            await driver.disconnect()
            rows = []
            for delay in (0, 30):
                await sim.control("delay_ms", delay)
                keep = await run_mode(sim, data, "keep", args.commands, args.health_interval)
                od = await run_mode(sim, data, "on_demand", args.on_demand_commands,
                                    args.health_interval)
                rows.append((delay, keep, od))
    print(f"{'link delay':>10}  {'mode':<9}  {'n':>4}  {'p50 ms':>8}  {'p99 ms':>8}  "
          f"{'door opening seen after':>24}")
    for delay, keep, od in rows:
        for name, r in (("keep", keep), ("on_demand", od)):
            print(f"{delay:>7} ms  {name:<9}  {r['n']:>4}  {r['p50']:>8.1f}  {r['p99']:>8.1f}  "
                  f"{r['door_seen']:>21.0f} ms")
        print(f"{'':>10}  ratio on_demand / keep (baseline): p50 {od['p50'] / keep['p50']:.1f}x, "
              f"p99 {od['p99'] / keep['p99']:.1f}x")
    print(f"(door opening on demand is seen at the next health poll; here every "
          f"{args.health_interval:g} s, 60 s by default)")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
