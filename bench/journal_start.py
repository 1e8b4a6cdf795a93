"""How long the journal keeps a (re)starting gateway from being ready, against its age.

The user situation: the hub restarts after a power cut with a year of events in its
journal (a few dozen to a few hundred thousand rows). Until ``lockgw run`` is ready, no
phone is served and the alarm centre's commands wait; carers may be at the door. The
journal's share of that time grew with the journal's length: its writer walked the
whole hash chain and ran SQLite's ``quick_check`` before it took anything.

For journals of ``--sizes`` access events, written with the real writer (``Store.round``,
2,000 events per transaction, then its head file), each figure ``--repeat`` times:

1. **open, full check** (``startup_check="full"``, what every start did before, and
   what ``Journal`` still does by default): ``async with Journal(...)`` until it takes
   events — the writer process started, the journal examined, opened, ``ready``.
2. **open, tail check** (``startup_check="tail"``, what ``lockgw run`` does now): the
   same, checking only what the head file does not vouch for; the full walk runs after
   ready in a process of its own.
3. **the start's journal reads** (``gateway.app.state_history``, before READY too).
4. **the background full check** (``Journal.check_in_background``) until it reports.
5. with ``--run``: **``lockgw run`` from its start to its ``gateway.ready`` line** (a home
   with one simulated lock, mosquitto), on the same size of journal; with ``--before DIR``
   also the code before the change (``git archive <commit> | tar -x -C DIR``), run by the
   same script: the user's figure and its ratio.

Prints each run, the median, the ratio tail / full (the baseline), and the load average
(2 vCPUs shared: run it more than once). The page cache is warm (the journal was just
written); after a power cut it is cold, which makes the full check's read of every page
slower still, and the tail check's few pages not: ``--cold`` evicts the journal's pages
before each open (``posix_fadvise``; a virtual disk's host may still cache them).

    .venv/bin/python bench/journal_start.py [--sizes 1000,50000,200000] [--repeat 3] [--cold] [--run [--before DIR]]
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.app import state_history  # noqa: E402
from gateway.journal import Journal, journal_path  # noqa: E402
from gateway.journal._store import Store  # noqa: E402
from protocols.events import AccessDecisionEvent, Channel  # noqa: E402

SITE = "bench-site"
BODY = AccessDecisionEvent(
    type="access.granted", door="front", device="front-lock", iss="org-thuiszorg-west",
    sub="c-55d2", role="verzorgende", purpose="planned", action="unlock",
    token_id="9f" * 8, channel=Channel.PHONE, reason="ok",
).model_dump_json()  # fmt: skip

HAS_TAIL = "startup_check" in inspect.signature(Journal).parameters


def generate(path: Path, events: int, site: str = SITE) -> float:
    """``events`` access events through the real writer; seconds it took."""
    t0 = time.perf_counter()
    store = Store(path, site, max_bytes=None)
    store.open()
    try:
        ns = time.time_ns() - events * 60_000_000_000  # one a minute, ending now
        left = events
        while left:
            n = min(left, Store.MAX_BATCH)
            batch = [("a", "access.granted", "front", BODY, ns + i * 60_000_000_000)
                     for i in range(n)]  # fmt: skip
            ns += n * 60_000_000_000
            r = store.round(batch)
            assert r.error is None, r.error
            left -= n
        # everything published (as on a hub that was online), so retention could run
        store.round([("m", store.seq, ())])
        store.write_head()
    finally:
        store.close()
    return time.perf_counter() - t0


def evict(path: Path) -> None:
    """Drop the journal's pages from the page cache (this file only), as after a power
    cut: ``posix_fadvise(DONTNEED)`` (the virtual disk's host may still cache them)."""
    for p in (path, path.with_name(path.name + "-wal")):
        try:
            fd = os.open(p, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


async def open_once(path: Path, check: str, cold: bool) -> tuple[float, float, Journal]:
    """(seconds to open, seconds for state_history, the journal still open)."""
    if cold:
        evict(path)
    kwargs = {"startup_check": check} if HAS_TAIL else {}
    j = Journal(path, SITE, retention_days=3650, **kwargs)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    await j.__aenter__()
    t1 = time.perf_counter()
    assert j.error is None and not j.restarts, (j.error, j.restarts)
    await state_history(j)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, j


async def measure(path: Path, check: str, repeat: int, cold: bool) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"open": [], "history": [], "background": []}
    for _ in range(repeat):
        opened, history, j = await open_once(path, check, cold)
        try:
            out["open"].append(opened)
            out["history"].append(history)
            if check == "tail":
                t0 = time.perf_counter()
                found = await j.check_in_background()
                out["background"].append(time.perf_counter() - t0)
                assert found is None, found
        finally:
            await j.__aexit__(None, None, None)
    return out


async def ready_times(events: int, repeat: int, root: str) -> list[float]:
    """``lockgw run`` (code from ``root``) on a journal of ``events``: seconds from the
    process's start to its ``gateway.ready`` log line, ``repeat`` starts."""
    from simulators.broker import MosquittoBroker
    from simulators.site import DeviceSpec, SimSite

    times: list[float] = []
    with tempfile.TemporaryDirectory(prefix="lockgw-bench-") as tmp:
        work = Path(tmp)
        lock = DeviceSpec("front-lock", "front", "lock", "carelock-lock")
        async with (
            SimSite(work / "home", devices=[lock]) as site,
            MosquittoBroker(workdir=work / "broker") as broker,
        ):
            site.env["PYTHONPATH"] = root
            site.write_config(broker.url)
            await site.start_devices()
            await site.pair_all()
            generate(journal_path(site.dir / "data"), events, site.site)
            log = site.dir / "gateway.log"
            for _ in range(repeat):
                offset = log.stat().st_size if log.exists() else 0
                t0 = time.perf_counter()
                await site.start_gateway(wait=False)
                async with asyncio.timeout(600):
                    while True:
                        if log.exists():
                            with log.open("rb") as f:
                                f.seek(offset)
                                if b'"gateway.ready"' in f.read():
                                    break
                        await asyncio.sleep(0.01)
                times.append(time.perf_counter() - t0)
                assert await site.stop("gateway") == 0
    return times


def ms(values: list[float]) -> str:
    each = ", ".join(f"{v * 1000:.0f}" for v in values)
    return f"{each} ms (median {statistics.median(values) * 1000:.0f})"


async def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="1000,50000,200000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", help="where the journals go (default: a temporary directory)")
    ap.add_argument("--cold", action="store_true",
                    help="evict the journal from the page cache before each open")  # fmt: skip
    ap.add_argument("--run", action="store_true",
                    help="also time lockgw run from its start to gateway.ready")  # fmt: skip
    ap.add_argument("--before", metavar="DIR",
                    help="with --run: also a checkout of the code before (git archive)")  # fmt: skip
    args = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{os.cpu_count()} CPUs; tail check {'present' if HAS_TAIL else 'ABSENT (old code)'}")  # fmt: skip
    worst = 0.0
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for events in sizes:
            path = Path(tmp) / f"j{events}" / "journal.sqlite3"
            took = generate(path, events)
            mb = path.stat().st_size / 1e6
            print(f"\n{events:,} events ({mb:.1f} MB, written in {took:.1f} s)")
            full = await measure(path, "full", args.repeat, args.cold)
            print(f"  open, full check (before)    {ms(full['open'])}")
            print(f"  start's journal reads        {ms(full['history'])}")
            if not HAS_TAIL:
                continue
            tail = await measure(path, "tail", args.repeat, args.cold)
            print(f"  open, tail check (now)       {ms(tail['open'])}")
            print(f"  start's journal reads        {ms(tail['history'])}")
            print(f"  background full check        {ms(tail['background'])} (after ready)")
            ratio = statistics.median(tail["open"]) / statistics.median(full["open"])
            worst = max(worst, statistics.median(tail["open"]))
            print(f"  ratio tail / full (open)     {ratio:.3f}")
            if args.run:
                now = await ready_times(events, args.repeat, str(ROOT))
                print(f"  lockgw run to ready (now)    {ms(now)}")
                if args.before:
                    was = await ready_times(events, args.repeat, args.before)
                    print(f"  lockgw run to ready (before) {ms(was)}")
                    ratio = statistics.median(now) / statistics.median(was)
                    print(f"  ratio now / before (ready)   {ratio:.3f}")
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if HAS_TAIL and worst > 1.0:
        print(f"MISSED: a tail-check open took {worst:.2f} s (target: under 1 s at any size)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
