"""Sustained events/s from journal append to subscriber receipt, beside raw aiomqtt.

    .venv/bin/python bench/event_pipeline.py [--count 30000] [--uvloop]

Both runs use one private mosquitto (the test broker's config) and one subscriber in a
separate process (aiomqtt, QoS 1), started before the clock starts:

- **raw**: an aiomqtt client publishing ``count`` messages at QoS 1 with 100 in flight
  (tasks + a semaphore: the best plain aiomqtt pipelining), no journal;
- **pipeline**: the real :class:`gateway.journal.Journal` (SQLite WAL,
  ``synchronous=FULL``, group commit) and :class:`gateway.mqtt.MqttLink`; 100 concurrent
  producers ``emit`` ``count`` events; the link streams the outbox (100 in flight) and
  marks events published on PUBACK.

The rate is ``count`` / (last receipt at the subscriber - first publish/emit).
Prints both, and the ratio pipeline / raw. Target: >= 5,000 events/s and >= 0.5 of raw.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.config import MqttConfig  # noqa: E402
from gateway.journal import Journal  # noqa: E402
from gateway.mqtt import MqttLink, Topics  # noqa: E402
from gateway.mqtt.loadgen import run_load  # noqa: E402
from simulators.broker import MosquittoBroker  # noqa: E402

WINDOW = 100
#: CPU seconds per message in this process (all threads), best run: less sensitive to
#: other load on the machine than the rates
CPU: dict[str, float] = {}


# -- the subscriber (a separate process) ---------------------------------------------
def subscribe(host: str, port: int, topic: str, count: int) -> None:
    """A plain paho subscriber (QoS 1): aiomqtt's message iterator costs a task per
    message and tops out near 3,000 msg/s here, below what is being measured."""
    import paho.mqtt.client as mqtt

    n = 0
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

    def on_connect(c: mqtt.Client, *_: object) -> None:
        c.subscribe(topic, qos=1)

    def on_subscribe(*_: object) -> None:
        print("ready", flush=True)

    def on_message(c: mqtt.Client, _u: object, _m: object) -> None:
        nonlocal n
        n += 1
        if n >= count:
            print(json.dumps({"last": time.time(), "n": n}), flush=True)
            c.disconnect()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(host, port)
    client.loop_forever()


async def start_subscriber(
    broker: MosquittoBroker, topic: str, count: int, uvloop: bool
) -> asyncio.subprocess.Process:
    args = [__file__, "--subscribe", broker.host, str(broker.port), topic, str(count)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, stdout=asyncio.subprocess.PIPE, env={**os.environ}
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 20)
    assert line.strip() == b"ready", line
    return proc


async def finish(proc: asyncio.subprocess.Process, start: float, count: int) -> float:
    assert proc.stdout is not None
    out = await asyncio.wait_for(proc.stdout.readline(), 300)
    await proc.wait()
    return count / (json.loads(out)["last"] - start)


# -- the two runs ----------------------------------------------------------------------
async def raw_rate(broker: MosquittoBroker, count: int, uvloop: bool) -> float:
    topic = "bench/raw"
    sub = await start_subscriber(broker, topic, count, uvloop)
    payload = b'{"v":1,"id":"0190f5d2-0000-7000-8000-000000000000","seq":1,"ts":"2026-01-01T00:00:00.000Z","site":"bench","type":"battery","device":"loadgen","door":"front","level":50,"low":false,"critical":false,"days_left":null}'
    async with aiomqtt.Client(
        broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V5, max_inflight_messages=0
    ) as c:
        # paho unbounded (its per-message queue scan costs), the semaphore keeps 100 in flight;
        # the default pending_calls_threshold warns on every publish (~12 %)
        c.pending_calls_threshold = WINDOW * 4
        sem = asyncio.Semaphore(WINDOW)
        tasks: set[asyncio.Task[None]] = set()

        async def one() -> None:
            try:
                await c.publish(topic, payload, qos=1)
            finally:
                sem.release()

        start, cpu0 = time.time(), time.process_time()
        for _ in range(count):
            await sem.acquire()
            t = asyncio.create_task(one())
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        CPU["raw"] = min(CPU.get("raw", 1e9), (time.process_time() - cpu0) / count)
        return await finish(sub, start, count)


async def pipeline_rate(broker: MosquittoBroker, count: int, uvloop: bool, data: Path) -> float:
    site = "bench"
    sub = await start_subscriber(broker, Topics.events(site), count, uvloop)
    cfg = MqttConfig(url=broker.url, client_id=f"lockgw-bench-{os.getpid()}")
    async with (
        Journal(data / "journal.sqlite3", site, retention_days=30) as journal,
        MqttLink(cfg, site, journal, version="bench", window=WINDOW) as link,
    ):
        await link.wait_connected(10)
        start, cpu0 = time.time(), time.process_time()
        await run_load(journal, count, concurrency=100, progress=False)
        cpu = (time.process_time() - cpu0) / count
        CPU["pipeline"] = min(CPU.get("pipeline", 1e9), cpu)
        rate = await finish(sub, start, count)
        assert journal.backlog() == 0 and journal.last_seq == count
        return rate


async def main(args: argparse.Namespace) -> int:
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))  # warnings only
    with tempfile.TemporaryDirectory(prefix="lockgw-bench-") as tmp:
        async with MosquittoBroker(workdir=Path(tmp) / "broker") as broker:
            raw = max([await raw_rate(broker, args.count, args.uvloop) for _ in range(args.rounds)])
            pipe = []
            for n in range(args.rounds):
                data = Path(tmp) / f"data{n}"
                pipe.append(await pipeline_rate(broker, args.count, args.uvloop, data))
            best = max(pipe)
    loop = "uvloop" if args.uvloop else "asyncio"
    print(
        f"event loop: {loop}; {args.count} events per run, best of {args.rounds}; QoS 1, window {WINDOW}"
    )
    print(f"raw aiomqtt QoS 1 pipelined publish -> subscriber: {raw:9.0f} msg/s")
    print(f"journal (WAL, synchronous=FULL) -> MqttLink -> subscriber: {best:9.0f} events/s")
    print(f"ratio pipeline / raw: {best / raw:.2f}  (targets: >= 5000 events/s, >= 0.5)")
    print(
        f"publisher-process CPU per message: raw {CPU['raw'] * 1e6:.0f} us, "
        f"pipeline {CPU['pipeline'] * 1e6:.0f} us (journal + link, all threads)"
    )
    load = os.getloadavg()[0]
    print(
        f"machine: {os.cpu_count()} CPUs, load average {load:.1f} at the end (other work skews both)"
    )
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--count", type=int, default=30_000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--uvloop", action="store_true", help="run both sides on uvloop")
    p.add_argument(
        "--subscribe", nargs=4, metavar=("HOST", "PORT", "TOPIC", "COUNT"), help=argparse.SUPPRESS
    )
    a = p.parse_args()
    runner = asyncio.run
    if a.uvloop:
        import uvloop

        runner = uvloop.run  # type: ignore[assignment]
    if a.subscribe:
        h, port, topic, cnt = a.subscribe
        with contextlib.suppress(KeyboardInterrupt):
            subscribe(h, int(port), topic, int(cnt))
        sys.exit(0)
    sys.exit(runner(main(a)))
