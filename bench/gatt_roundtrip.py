"""Loopback GATT round trip: write-with-response + the notification it triggers.

A simulator process serves one characteristic whose write handler notifies on another;
the bench connects through bleak (the loopback backend), subscribes, and times
``write_gatt_char(..., response=True)`` until both the write response and the
notification have arrived, ``--ops`` times in a row, at 0 ms and at 30 ms per-frame link
delay (one BLE connection interval).

Modelled link time for one operation: the write goes up (1 × delay), the response and
the notification come down together (1 × delay) = 2 × delay, i.e. one link round trip.
The ratio printed is measured / modelled (1.0 = the transport adds nothing).

    .venv/bin/python bench/gatt_roundtrip.py [--ops 1000] [--delays 0,30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.ble import make_client
from simulators.gatt_server import Connection, GattServer
from simulators.runner import add_device_arguments, listen_kwargs, run_device

SVC = "8e5c1001-6c6f-636b-6777-0000000000b0"
CMD = "8e5c1002-6c6f-636b-6777-0000000000b0"
EVT = "8e5c1003-6c6f-636b-6777-0000000000b0"


async def serve(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_device_arguments(parser, default_port=0)
    args = parser.parse_args(argv)
    server = GattServer("bench-device", **listen_kwargs(args))
    svc = server.add_service(SVC)
    evt = svc.add_characteristic(EVT, notify=True)

    async def on_cmd(conn: Connection, data: bytes) -> None:
        await conn.notify(evt, data)

    svc.add_characteristic(CMD, write=on_cmd)
    return await run_device(server, args)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


async def measure(address: str, ops: int) -> list[float]:
    async with make_client(address, timeout=10) as client:
        got: asyncio.Queue[bytearray] = asyncio.Queue()
        await client.start_notify(EVT, lambda _c, d: got.put_nowait(d))
        times: list[float] = []
        for i in range(ops + 20):
            payload = i.to_bytes(4, "big") + bytes(16)
            t0 = time.perf_counter()
            await client.write_gatt_char(CMD, payload, response=True)
            assert await got.get() == payload
            if i >= 20:  # warm-up
                times.append(time.perf_counter() - t0)
        return times


async def bench(ops: int, delays: list[float]) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve",
        "--listen",
        "127.0.0.1:0",
        "--control",
        "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    try:
        while True:
            line = await proc.stdout.readline()
            if not line:
                raise SystemExit("the simulator did not start")
            if line.startswith(b'{"ready"'):
                ready = json.loads(line)
                break
        from simulators.control import send_control

        print(f"loopback GATT round trip (write-with-response + notification), {ops} ops per row")
        print("frames per op: 1 up (write), 2 down (response, notification) = 1 link round trip")
        print(
            f"{'delay/frame':>12} {'model':>9} {'p50':>9} {'p99':>9} {'mean':>9} {'p50/model':>10} {'p99/model':>10}"
        )
        for delay in delays:
            await send_control(ready["control"], "delay_ms", delay)
            times = await measure(ready["address"], ops)
            model = 2 * delay / 1000
            p50, p99, mean = pct(times, 50), pct(times, 99), statistics.fmean(times)
            r50, r99 = (f"{p50 / model:10.3f}", f"{p99 / model:10.3f}") if model else ("n/a", "n/a")
            print(
                f"{delay:>10g}ms {model * 1000:>7.1f}ms {p50 * 1000:>7.2f}ms {p99 * 1000:>7.2f}ms "
                f"{mean * 1000:>7.2f}ms {r50:>10} {r99:>10}"
            )
    finally:
        proc.terminate()
        await proc.wait()


def main() -> None:
    if "--serve" in sys.argv:
        sys.argv.remove("--serve")
        sys.exit(asyncio.run(serve(sys.argv[1:])))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=1000)
    parser.add_argument("--delays", default="0,30", help="per-frame delays in ms, comma-separated")
    args = parser.parse_args()
    asyncio.run(bench(args.ops, [float(d) for d in args.delays.split(",")]))


if __name__ == "__main__":
    main()
