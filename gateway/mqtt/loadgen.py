"""A load generator: the real journal and MQTT link of a config, emitting N events.

``python -m gateway.mqtt.loadgen --config F --count N [--concurrency C]`` opens the
site's journal and MQTT link exactly as the daemon does, emits ``N`` ``battery``
events from ``C`` concurrent producers, waits until the broker has acknowledged
every journaled event, and prints one JSON line of figures. Used by the
``kill -9`` test (a real process killed mid-stream) and by ``bench/``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from gateway import __version__
from gateway.config import load_config
from gateway.journal import Journal, journal_path
from gateway.mqtt import MqttLink
from protocols.errors import LockgwError
from protocols.events import BatteryEvent

__all__ = ["main"]


async def run_load(
    journal: Journal, count: int, concurrency: int, *, progress: bool, rate: float | None = None
) -> dict[str, float]:
    """Emit ``count`` events from ``concurrency`` producers (at most ``rate`` per second);
    return once all are published."""
    start = time.perf_counter()
    remaining = count

    async def producer() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            level = remaining % 101
            if rate:
                due = start + (count - remaining) / rate
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
            env = await journal.emit(
                BatteryEvent(device="loadgen", door="front", level=level, low=False, critical=False)
            )
            if progress and env.seq % 1000 == 0:
                print(json.dumps({"journaled_seq": env.seq}), flush=True)

    await asyncio.gather(*(producer() for _ in range(max(1, min(concurrency, count)))))
    emitted = time.perf_counter()
    if progress:
        print(json.dumps({"journaled": count, "last_seq": journal.last_seq}), flush=True)
    await journal.wait_drained()
    done = time.perf_counter()
    return {
        "count": count,
        "last_seq": journal.last_seq,
        "journal_s": round(emitted - start, 3),
        "total_s": round(done - start, 3),
        "events_per_s": round(count / (done - start), 1) if count else 0.0,
    }


async def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m gateway.mqtt.loadgen", description=__doc__)
    p.add_argument("--config", required=True)
    p.add_argument("--count", type=int, required=True, help="events to emit (0: only drain)")
    p.add_argument("--concurrency", type=int, default=100, help="concurrent producers")
    p.add_argument("--rate", type=float, default=None, help="at most R events per second")
    p.add_argument("--timeout", type=float, default=300.0, help="give up after T seconds")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config)
        async with (
            Journal(
                journal_path(cfg.site.data_dir),
                cfg.site.id,
                retention_days=cfg.journal.retention_days,
                max_bytes=cfg.journal.max_bytes,
            ) as journal,
            MqttLink(cfg.mqtt, cfg.site.id, journal, version=__version__) as link,
        ):
            await link.wait_connected(args.timeout)
            async with asyncio.timeout(args.timeout):
                figures = await run_load(
                    journal, args.count, args.concurrency, progress=True, rate=args.rate
                )
    except (LockgwError, TimeoutError) as exc:
        print(f"loadgen: {exc or 'timed out'}", file=sys.stderr)
        return 1
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
