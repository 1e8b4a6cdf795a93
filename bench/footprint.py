"""Memory and CPU of the gateway with 50 simulated devices, idle and under load.

A Pi-class hub has 1–4 GB and shares its cores with the OS. This starts mosquitto, 50
simulated carelock locks (one ``lockgw-sim lock`` process each, 50 doors), pairs them
with ``lockgw pair`` and runs ``lockgw run`` twice — with the standard asyncio loop (the
default) and with uvloop (``LOCKGW_EVENT_LOOP=uvloop``) — reading the gateway's own
RSS and CPU time from /proc (the daemon and its journal writer process together): idle (all devices connected and supervised, nobody at a
door) and under load (phones unlocking doors continuously).

Targets: RSS ≤ 100 MB with 50 devices, idle CPU ≤ 1 %.

    .venv/bin/python bench/footprint.py [--devices 50] [--idle 30] [--load 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from simulators.broker import MosquittoBroker  # noqa: E402
from simulators.site import Carer, DeviceSpec, Org, SimSite  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
RSS_TARGET_MB = 100.0
IDLE_CPU_TARGET = 1.0


def family(pid: int) -> list[int]:
    """``pid`` and its descendants (the gateway and its journal writer process)."""
    out = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                out += family(int(child))
    return out


def rss_mb(pid: int) -> float:
    """Resident memory of the gateway's processes together (shared pages counted twice:
    an upper bound)."""
    total = 0
    for p in family(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def cpu_seconds(pid: int) -> float:
    total = 0
    for p in family(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / TICK


async def measure(pid: int, seconds: float) -> tuple[float, float]:
    """(CPU % of one core, peak RSS MB) over ``seconds``."""
    c0, t0, peak = cpu_seconds(pid), time.monotonic(), rss_mb(pid)
    end = t0 + seconds
    while time.monotonic() < end:
        await asyncio.sleep(0.5)
        peak = max(peak, rss_mb(pid))
    return 100 * (cpu_seconds(pid) - c0) / (time.monotonic() - t0), peak


async def wait_connected(site: SimSite, n: int, timeout: float = 120) -> None:
    """Until ``lockgw health`` reports every device in contact (or the timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code, _out = await site.cli("health", "--config", str(site.config), "--json")
        if code == 0:
            return
        await asyncio.sleep(2)
    print(f"  (not every device reported healthy within {timeout:.0f} s)", file=sys.stderr)


async def load(site: SimSite, carers: list[Carer], mine: dict[str, list[str]], seconds: float) -> int:
    done = 0
    end = time.monotonic() + seconds

    async def phone(i: int) -> None:
        nonlocal done
        c = carers[i]
        k = 0
        while time.monotonic() < end:
            await site.attempt(c, door=mine[c.sub][k % len(mine[c.sub])])
            k += 1
            done += 1

    async with asyncio.TaskGroup() as tg:
        for i in range(len(carers)):
            tg.create_task(phone(i))
    return done


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--idle", type=float, default=30.0, help="seconds of idle measurement")
    ap.add_argument("--load", type=float, default=20.0, help="seconds of load")
    args = ap.parse_args()
    doors = [f"door-{i:02d}" for i in range(args.devices)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="lockgw-footprint-") as tmp:
        work = Path(tmp)
        devices = [DeviceSpec(f"lock-{i:02d}", d, "lock", "carelock-lock") for i, d in enumerate(doors)]
        async with SimSite(work, devices=devices) as site, MosquittoBroker(workdir=work / "broker") as broker:
            org = site.add_org(Org("org-bench", "Bench", ("verzorgende",), ("planned",), tuple(doors)))
            carers = [Carer(f"p{i}", f"c-{i:03d}", org, "verzorgende") for i in range(20)]
            mine = {c.sub: doors[i :: len(carers)] for i, c in enumerate(carers)}
            for c in carers:  # a token names at most 32 doors: each carer has a few
                site.issue(c, doors=mine[c.sub])
            site.write_config(broker.url, extra="[access]\nrate_limit = 100000\n")
            t = time.monotonic()
            await site.start_devices()
            await site.pair_all()
            print(f"started and paired {args.devices} simulated locks in {time.monotonic() - t:.0f} s")
            for loop in ("uvloop", "asyncio"):
                proc = await site.start_gateway(env={"LOCKGW_EVENT_LOOP": loop})
                await wait_connected(site, args.devices)
                await asyncio.sleep(3)
                idle_cpu, idle_rss = await measure(proc.pid, args.idle)
                task = asyncio.create_task(load(site, carers, mine, args.load))
                load_cpu, load_rss = await measure(proc.pid, args.load)
                n = await task
                rows.append((loop, idle_rss, idle_cpu, load_rss, load_cpu, n / args.load))
                await site.stop("gateway")
    print(f"{'loop':>8} | {'idle RSS':>9} {'idle CPU':>9} | {'load RSS':>9} {'load CPU':>9} {'unlocks/s':>10}")
    for loop, ir, ic, lr, lc, rate in rows:
        print(f"{loop:>8} | {ir:>7.1f}MB {ic:>8.2f}% | {lr:>7.1f}MB {lc:>8.1f}% {rate:>10.1f}")
    uv, std = rows[0], rows[1]
    print(f"uvloop / asyncio: idle RSS {uv[1] / std[1]:.2f}×, load CPU {uv[4] / std[4]:.2f}×, "
          f"unlocks/s {uv[5] / std[5]:.2f}×")
    ok = all(r[3] <= RSS_TARGET_MB and r[2] <= IDLE_CPU_TARGET for r in rows)
    print(f"targets (both loops, {args.devices} devices): RSS ≤ {RSS_TARGET_MB:.0f} MB "
          f"(peak {max(r[3] for r in rows):.1f}), idle CPU ≤ {IDLE_CPU_TARGET}% "
          f"({max(r[2] for r in rows):.2f}%): {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
