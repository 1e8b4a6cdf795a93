"""Floods without harm (issue 17, item 4): the phone link under idle, trickling and
malformed floods. What a carer's phone hears while a flood is on, what is journaled
(bounded: one row per source per interval, with a count), and what health says.

The link's admission policy is tested alone (``PendingPool``); the floods themselves
against a real ``lockgw run`` with real sockets on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from gateway.floods import OTHER, PendingPool, SourceCounts, source_of
from gateway.health import evaluate, read_snapshot
from protocols.phone import Result, decode_frame, pack
from simulators.broker import MosquittoBroker
from simulators.site import Carer
from tests.test_door_process import event_for, expect, home, west, windows_now

# -- the admission policy alone ------------------------------------------------------------


def test_a_newcomer_is_never_the_one_closed() -> None:
    pool: PendingPool[str] = PendingPool(max_total=3, max_per_source=3)
    assert pool.admit("a1", "A", 0.0) == [] and pool.admit("a2", "A", 0.0) == []
    assert pool.admit("a3", "A", 0.0) == []
    assert pool.admit("a4", "A", 5.0) == ["a1"]  # the oldest makes room, not the newcomer
    assert len(pool) == 3


def test_idle_connections_go_before_one_that_sent_its_hello() -> None:
    pool: PendingPool[str] = PendingPool(max_total=3, max_per_source=3)
    for k in ("phone", "idle1", "idle2"):
        pool.admit(k, "A", 0.0)
    pool.hello_seen("phone")  # the oldest, but it is under way
    assert pool.admit("idle3", "A", 5.0) == ["idle1"]
    assert pool.admit("idle4", "A", 5.0) == ["idle2"]
    assert pool.admit("idle5", "A", 7.0) == ["idle3"]


def test_the_busiest_source_pays_for_a_flood() -> None:
    pool: PendingPool[str] = PendingPool(max_total=4, max_per_source=3)
    pool.admit("b1", "B", 0.0)  # another phone, oldest of all
    for i in range(3):
        pool.admit(f"a{i}", "A", 0.0)
    assert pool.admit("c1", "C", 5.0) == ["a0"]  # full: A holds the most
    assert pool.admit("a3", "A", 5.0) == ["a1"]  # A over its own bound
    pool.discard("b1")
    assert pool.admit("b2", "B", 5.0) == []


def test_young_connections_are_spared_until_the_hard_limit() -> None:
    """A phone's connection is not closed in its first second by a storm of newer ones
    (an attacker reconnecting as fast as it can); the hard limit still holds."""
    pool: PendingPool[str] = PendingPool(max_total=2, max_per_source=2, hard_limit=4, grace=1.0)
    pool.admit("phone", "A", 10.0)
    assert pool.admit("x1", "A", 10.1) == []
    assert pool.admit("x2", "A", 10.2) == []  # over the soft bounds, but all are young
    assert pool.admit("x3", "A", 10.3) == []
    assert pool.admit("x4", "A", 10.4) == ["phone"]  # the hard limit: the oldest idle goes
    # x1 and x2 are past their grace and go; x3, x4 and the newcomer stay (young)
    assert pool.admit("x5", "A", 11.25) == ["x1", "x2"]
    assert len(pool) == 3


def test_a_phone_between_hello_and_proof_is_spared_however_long_a_busy_gateway_takes() -> None:
    """Under the soft bounds only connections without a whole frame are closed: a phone
    whose proof a flooded gateway has not read for seconds keeps its turn."""
    pool: PendingPool[str] = PendingPool(max_total=2, max_per_source=2, hard_limit=10)
    pool.admit("phone", "A", 0.0)
    pool.hello_seen("phone")
    pool.admit("x1", "A", 5.0)
    assert pool.admit("x2", "A", 9.0) == ["x1"]  # not the phone, old as it is
    assert pool.admit("x3", "A", 9.5) == []  # only young idle ones left besides it
    assert len(pool) == 3


def test_counts_per_source_are_bounded_and_add_up() -> None:
    counts = SourceCounts(max_sources=2)
    for src in ("A", "B", "C", "D", "A"):
        counts.add(src)
    assert len(counts) == 3 and counts.total() == 5
    assert counts.take() == {"A": 2, "B": 1, OTHER: 2}
    assert counts.total() == 0


def test_a_source_is_the_address_without_its_port() -> None:
    assert source_of("127.0.0.1:5123") == "127.0.0.1"
    assert source_of("::1:5123") == "::1"
    assert source_of("ble:AA:BB:CC:DD:EE:FF") == "ble:AA:BB:CC:DD:EE:FF"


# -- real floods against lockgw run ------------------------------------------------------------

FLOOD = 1000


class Flood:
    """``FLOOD`` connections to the phone link held open, half idle and half trickling
    one byte at a time; each one the gateway closes is opened again at once."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.closed_by_gateway = 0
        self.open = 0
        self.connects = 0
        self.all_connected = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def _hold(self, trickle: bool) -> None:
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            self.open += 1
            self.connects += 1
            if self.connects >= FLOOD:
                self.all_connected.set()
            try:
                if trickle:
                    # a length header promising 4000 bytes, then a byte now and then
                    writer.write((4000).to_bytes(4, "big"))
                    while not reader.at_eof():
                        writer.write(b"\xa0")
                        await writer.drain()
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(0.3):
                                await reader.read(1)
                else:
                    await reader.read()  # until the gateway closes it
            except OSError:
                pass
            finally:
                self.open -= 1
                self.closed_by_gateway += 1
                writer.close()

    async def __aenter__(self) -> Flood:
        for i in range(FLOOD):
            self._tasks.add(asyncio.create_task(self._hold(trickle=i % 2 == 1)))
        await self.all_connected.wait()  # (a thousand connects; some were closed already)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@pytest.mark.slow
async def test_a_phone_gets_in_while_a_thousand_connections_idle_or_trickle(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """1,000 connections held open (half silent, half trickling a frame byte by byte,
    each reopened as soon as the gateway closes it): the carer's phone still opens the
    door, the flood is journaled as ``access.suspicious`` (no door, the source, a count)
    and health warns that the phone link is under pressure."""
    inside, _ = windows_now()
    org = west()
    # health looks every 0.3 s: the pressure reason covers the last two flood intervals
    # (≤ 4 s), which the default 5 s look can miss when the closures come in bursts
    async with home(
        tmp_path, broker, [org], phone_link="flood_interval = 2",
        extra="[health]\ninterval = 0.3\n",
    ) as (sim, platform):  # fmt: skip
        anna = Carer("Anna", "anna", org, "verzorgende")
        sim.issue(anna, windows=inside)
        async with Flood(sim.phone_port) as flood:
            for _ in range(3):
                await expect(sim, platform, anna, "ok")
            sus = await platform.wait_for(
                lambda e: e["type"] == "access.suspicious" and e["door"] is None, timeout=30
            )
            assert flood.closed_by_gateway > 0  # the gateway made room
            assert sus["source"] == "127.0.0.1" and sus["count"] > 0 and sus["window"] == 2, sus
            data = sim.dir / "data"
            for _ in range(100):
                problems = [r.text for r in evaluate(data, read_snapshot(data))]
                if any(p.startswith("phone link: under pressure") for p in problems):
                    break
                await asyncio.sleep(0.2)
            else:
                raise AssertionError(f"no phone link warning in {problems}")
        # the flood is over: one more report at most, then the warning goes
        await expect(sim, platform, anna, "ok")


MALFORMED = 10_000


async def _garbage(port: int, n: int, results: list[Result]) -> None:
    """``n`` malformed hellos, one connection each; keeps every answer."""
    for _ in range(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(pack(b"\xa1\x61t\x63bye"))  # {"t": "bye"}: no such frame
            size = int.from_bytes(await reader.readexactly(4), "big")
            frame = decode_frame(await reader.readexactly(size))
            assert isinstance(frame, Result)
            results.append(frame)
        finally:
            writer.close()


@pytest.mark.slow
async def test_ten_thousand_malformed_frames_make_a_bounded_number_of_rows(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """10,000 malformed hellos from one address: every one is answered ``malformed``,
    the journal gets one row when the series opens and one per interval after (not one
    per frame), their counts add up to 10,000, and the carer still gets in."""
    inside, _ = windows_now()
    org = west()
    interval = 3
    async with home(
        tmp_path, broker, [org], phone_link=f"flood_interval = {interval}"
    ) as (sim, platform):
        anna = Carer("Anna", "anna", org, "verzorgende")
        sim.issue(anna, windows=inside)
        after = platform.checker.last_seq
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        results: list[Result] = []
        # ten at a time: below max_pending_per_source, so none is closed to make room
        await asyncio.gather(*(_garbage(sim.phone_port, MALFORMED // 10, results) for _ in range(10)))
        assert len(results) == MALFORMED
        assert all(r.reason == "malformed" and not r.granted for r in results)

        def rows() -> list[dict[str, object]]:
            return [
                e
                for e in platform.checker.events
                if e["seq"] > after and e["type"] == "access.denied" and e["reason"] == "malformed"
            ]

        for _ in range(200):  # until the last interval's row is in
            if sum(int(str(e["count"])) for e in rows()) >= MALFORMED:
                break
            await asyncio.sleep(0.1)
        elapsed = loop.time() - t0
        got = rows()
        assert sum(int(str(e["count"])) for e in got) == MALFORMED, got
        assert {e["source"] for e in got} == {"127.0.0.1"}
        # the opening row, then at most one per interval that passed (+1 for the edges)
        assert len(got) <= 2 + elapsed / interval + 1, (len(got), elapsed)
        assert got[0]["count"] == 1
        # every answer names a row that was journaled (the series' opening row)
        ids = {e["id"] for e in got}
        assert {r.event for r in results} <= ids
        first = await event_for(platform, results[0])
        assert first["source"] == "127.0.0.1"
        await expect(sim, platform, anna, "ok")
