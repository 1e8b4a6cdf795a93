"""Floods against the real daemon (issue 17): what they cost a carer and the hub.

1. Phone link: a carer's unlock latency (hello → result) alone, then with 1,000
   connections held open against the link (half silent, half trickling a frame one byte
   at a time, each reopened as soon as the gateway closes it). Prints p50 / p95 / max
   and the ratio to the quiet run, and how many flood connections the gateway closed.
2. MQTT: the gateway's peak resident memory (VmHWM, from /proc) before and after one
   250 MB message on its commands topic — with MQTT 5 (the gateway announces a Maximum
   Packet Size, the broker does not deliver it) and with MQTT 3.1.1 (nothing bounds what
   the broker delivers: this is the hub's exposure without a broker message_size_limit).

    .venv/bin/python bench/floods.py [--n 50] [--mb 250] [--skip-phone] [--skip-mqtt]

Target: every flood attempt still granted; MQTT 5 peak RSS grows < 20 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiomqtt  # noqa: E402

from simulators.broker import MosquittoBroker  # noqa: E402
from simulators.site import Carer, DeviceSpec, Org, SimSite  # noqa: E402

FLOOD = 1000


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


def vm(pid: int, field: str) -> int:
    """A /proc/PID/status size field (VmRSS, VmHWM) in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


class Flood:
    def __init__(self, port: int) -> None:
        self.port = port
        self.closed = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def _hold(self, trickle: bool) -> None:
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            try:
                if trickle:
                    writer.write((4000).to_bytes(4, "big"))
                    while not reader.at_eof():
                        writer.write(b"\xa0")
                        await writer.drain()
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(0.3):
                                await reader.read(1)
                else:
                    await reader.read()
            except OSError:
                pass
            finally:
                self.closed += 1
                writer.close()

    def start(self) -> None:
        for i in range(FLOOD):
            self._tasks.add(asyncio.create_task(self._hold(trickle=i % 2 == 1)))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _home(base: Path, broker: MosquittoBroker, extra: str = "") -> tuple[SimSite, Carer]:
    sim = SimSite(base, devices=[DeviceSpec("front-lock", "front", "lock", "carelock-lock")])
    await sim.__aenter__()
    org = Org("org-west", "Thuiszorg West", roles=("verzorgende",), purposes=("planned",))
    sim.add_org(org)
    sim.write_config(broker.url, extra=extra)
    await sim.start_devices()
    await sim.pair_all()
    anna = Carer("Anna", "anna", org, "verzorgende")
    sim.issue(anna)
    await sim.start_gateway()
    return sim, anna


async def _latencies(sim: SimSite, anna: Carer, n: int) -> tuple[list[float], int]:
    out: list[float] = []
    denied = 0
    for _ in range(n):
        t0 = time.perf_counter()
        res = await sim.attempt(anna, timeout=30)
        out.append((time.perf_counter() - t0) * 1000)
        denied += not res.granted
    return out, denied


async def phone(base: Path, broker: MosquittoBroker, n: int) -> bool:
    sim, anna = await _home(base / "phone", broker)
    try:
        await _latencies(sim, anna, 5)  # warm up
        quiet, _ = await _latencies(sim, anna, n)
        flood = Flood(sim.phone_port)
        flood.start()
        await asyncio.sleep(3)  # the flood is established
        loud, denied = await _latencies(sim, anna, n)
        closed = flood.closed
        await flood.stop()
    finally:
        await sim.close()
    print(f"phone link, {n} unlocks each (ms)      p50      p95      max")
    print(f"  quiet                            {pct(quiet, 50):7.1f}  {pct(quiet, 95):7.1f}  {max(quiet):7.1f}")
    print(f"  with {FLOOD} idle/trickling conns  {pct(loud, 50):7.1f}  {pct(loud, 95):7.1f}  {max(loud):7.1f}")
    ratio = statistics.median(loud) / statistics.median(quiet)
    print(f"  ratio of medians {ratio:.2f}; flood connections closed by the gateway: {closed}; "
          f"attempts not granted under the flood: {denied}")  # fmt: skip
    return denied == 0


async def _settled(pid: int, quiet: float = 5.0, limit: float = 180.0) -> int:
    """The daemon's peak RSS once it has stopped growing for ``quiet`` seconds (a big
    message takes a while to arrive on a busy machine: a fixed wait measured one half-read
    once), at most ``limit`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    peak, since = vm(pid, "VmHWM"), loop.time()
    while loop.time() < end and loop.time() - since < quiet:
        await asyncio.sleep(0.5)
        now = vm(pid, "VmHWM")
        if now != peak:
            peak, since = now, loop.time()
    return peak


async def mqtt(base: Path, broker: MosquittoBroker, mb: int) -> bool:
    ok = True
    for protocol in ("5", "3.1.1"):
        sim, _ = await _home(base / f"mqtt{protocol}", broker)
        if protocol != "5":  # the site writes the [mqtt] table: set the protocol in it
            cfg = sim.config.read_text().replace("[mqtt]\n", f'[mqtt]\nprotocol = "{protocol}"\n', 1)
            await sim.stop("gateway")
            sim.config.write_text(cfg)
            await sim.start_gateway()
        try:
            proc = sim.procs["gateway"]
            pid = proc.pid
            await asyncio.sleep(2)
            before = vm(pid, "VmHWM")
            async with aiomqtt.Client(broker.host, broker.port) as c:
                await c.publish(
                    f"lockgw/v1/{sim.site}/commands", b"\xd2" * (mb * 1024 * 1024), qos=1, timeout=600
                )
            after = await _settled(pid)  # it arrived (or not) and the daemon is done with it
            alive = proc.returncode is None
            raw = sim.command("refresh")
            async with aiomqtt.Client(broker.host, broker.port) as c:
                await c.publish(f"lockgw/v1/{sim.site}/commands", raw, qos=1)
            await asyncio.sleep(2)
            print(f"MQTT {protocol:5}: peak RSS {before / 1024:6.1f} MB before, "
                  f"{after / 1024:7.1f} MB after one {mb} MB message "
                  f"(+{(after - before) / 1024:.1f} MB); gateway alive: {alive}")  # fmt: skip
            if protocol == "5":
                ok = ok and alive and (after - before) < 20 * 1024
        finally:
            await sim.close()
    return ok


async def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=50, help="unlocks per phone run")
    p.add_argument("--mb", type=int, default=250, help="size of the big MQTT message")
    p.add_argument("--skip-phone", action="store_true")
    p.add_argument("--skip-mqtt", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the working directory (logs)")
    args = p.parse_args(argv)
    ok = True
    with contextlib.ExitStack() as stack:
        tmp = tempfile.mkdtemp() if args.keep else stack.enter_context(tempfile.TemporaryDirectory())
        print(f"(working in {tmp})")
        async with MosquittoBroker() as broker:
            if not args.skip_phone:
                ok = await phone(Path(tmp), broker, args.n) and ok
            if not args.skip_mqtt:
                ok = await mqtt(Path(tmp), broker, args.mb) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
