"""Fault injection on the door path, with real processes: ``lockgw run``, a ``lockgw-sim
lock``, mosquitto and phones (as in tests/test_door_process.py).

Each test breaks one thing the door depends on — the journal's disk, the journal's
file, its writer process, the lock's answer, the broker — and checks what the phone
hears, what is durably recorded, what the platform receives (eventually, in order,
without a gap, with the id the phone heard), what health says and what the lock ends
up doing.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_door_process import DEVICE_TIMEOUT, check_fields, home, lock_state, west, windows_now

from protocols.control import Command
from protocols.phone import Result
from simulators.broker import MosquittoBroker
from simulators.platform import Platform
from simulators.site import Carer, SimSite

pytestmark = pytest.mark.slow

Event = dict[str, Any]


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[None]:
    """A tmpfs of ``size`` mounted at ``path`` (the home's data directory): a disk that
    can really fill up. Skips the test where mounting is not allowed (not root)."""
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def fill(directory: Path) -> Path:
    """Write a file into ``directory`` until its disk is full."""
    filler = directory / "filler"
    chunk = b"\xff" * 65536
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    break
                chunk = chunk[: len(chunk) // 2]
    finally:
        os.close(fd)
    return filler


async def done(value: bool) -> bool:
    return value


async def lock_state_is(sim: SimSite, state: str) -> bool:
    return await lock_state(sim) == state


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    """Wait until ``check()`` is true (the test fails at ``timeout``)."""
    async with asyncio.timeout(timeout):
        while not await check():  # noqa: ASYNC110 - another process: polling is all there is
            await asyncio.sleep(0.05)


def log_lines(sim_dir: Path, event: str) -> list[dict[str, Any]]:
    out = []
    for line in (sim_dir / "gateway.log").read_text(errors="replace").splitlines():
        if f'"{event}"' in line:
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


def writer_pid(gateway_pid: int) -> int | None:
    """The pid of the gateway's journal writer process (its child), if one runs."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == gateway_pid and b"gateway.journal._child" in cmd:
            return int(entry.name)
    return None


async def health(sim: SimSite) -> tuple[int, str]:
    return await sim.cli("health", "--config", str(sim.config), "--lang", "en")


async def status_is(platform: Platform, journal: str) -> bool:
    return (platform.status or {}).get("journal") == journal


def published_in_order(
    platform: Platform, results: list[Result], *, resent: bool = False
) -> list[Event]:
    """The published events of ``results``, checked: each phone's id is there, in the
    order of the attempts, in a gap-free stream; sent once unless ``resent`` (after a
    broker outage QoS 1 may deliver again what was not acknowledged: the platform
    drops it by id)."""
    assert not platform.checker.gaps()
    assert resent or platform.checker.duplicates == 0
    by_id = {e["id"]: e for e in platform.checker.events}
    events = [by_id[r.event] for r in results]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs), seqs
    return events


async def wait_published(platform: Platform, results: list[Result], timeout: float = 60) -> None:
    ids = {r.event for r in results}
    await platform.wait_for(
        lambda _e: ids <= {e["id"] for e in platform.checker.events}, timeout=timeout
    )


async def remote(sim: SimSite, platform: Platform, cmd: str) -> str:
    """Send a signed command; its request id."""
    raw = sim.command(cmd)
    await platform.send_command(raw)
    return Command.decode(raw).request_id


# -- the journal cannot write ------------------------------------------------------------------


async def test_full_disk_every_attempt_is_kept_and_published_when_space_returns(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """The data disk fills up while the gateway runs. Every carer at the door still hears
    ``granted`` and the lock opens (care first); each attempt — and a signed remote
    opening — waits in the journal's fallback file, which had its space reserved; the
    platform hears at once on ``status`` that the journal is in its fallback, health
    says so. When space returns, every attempt is journaled and published in order with
    the id the phone heard, followed by ``journal.recovered``; the chain verifies.

    (On the old code the door's own failure path raised ``TypeError``: the lock opened,
    the phone heard nothing and nothing said who came in.)"""
    inside, _ = windows_now()
    org = west()
    data = tmp_path / "home" / "data"
    with small_disk(data, "4m"):
        async with home(tmp_path, broker, [org]) as (sim, platform):
            anna = Carer("Anna", "anna", org, "verzorgende")
            sim.issue(anna, windows=inside)
            filler = fill(data)
            results: list[Result] = []
            for _ in range(300):  # until SQLite has no page left to reuse
                results.append(await sim.attempt(anna, timeout=15))
                if await status_is(platform, "fallback"):
                    break
            assert await status_is(platform, "fallback"), "the journal never filled up"
            # (publishing frees a few pages now and then: the journal may take a replay
            # in between; the order stays the order of the attempts whatever happens)
            # at least six attempts into the fallback (health, asked of the daemon,
            # knows at once; the journal also holds the health events of the full disk)
            for n in range(60):
                results.append(await sim.attempt(anna, timeout=15))
                if n >= 5 and await health_says(sim, "events wait in its fallback file"):
                    break
            assert await health_says(sim, "events wait in its fallback file")
            assert all((r.granted, r.reason) == (True, "ok") for r in results), results
            assert await lock_state(sim) == "unlocked"
            rid = await remote(sim, platform, "lock")
            await until(lambda: lock_state_is(sim, "locked"))

            mark = platform.checker.last_seq
            filler.unlink()
            await platform.wait_for(
                lambda e: e["type"] == "journal.recovered", timeout=60, after_seq=mark
            )
            await wait_published(platform, results)
            events = published_in_order(platform, results)
            for ev in events:
                check_fields(ev, reason="ok", granted=True)
                assert (ev["sub"], ev["door"]) == ("anna", "front"), ev
            replays = [
                (e["first_seq"], e["last_seq"])
                for e in platform.checker.events
                if e["type"] == "journal.recovered"
            ]
            waited = [e for e in events if any(a <= e["seq"] <= b for a, b in replays)]
            assert len(waited) >= 3, replays  # these went through the fallback file
            command = await platform.wait_for(
                lambda e: e["type"] == "access.granted" and e.get("request_id") == rid
            )
            assert command["channel"] == "command" and command["action"] == "lock"
            await until(lambda: status_is(platform, "ok"))
            code, out = await sim.cli("audit", "verify", "--config", str(sim.config))
            assert code == 0, out


async def test_journal_max_bytes_reached_the_door_works_and_a_restart_replays(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """``journal.max_bytes`` reached (a limit on the SQLite file only): attempts wait in
    the fallback file; the installer raises the limit and restarts the gateway, which
    journals and publishes them first, in order, with the ids the phones heard."""
    inside, _ = windows_now()
    org = west()
    limit = 1024 * 1024

    def nearly_full(sim: SimSite) -> None:  # an old journal, 64 KB short of its limit
        from gateway.journal import journal_path
        from gateway.journal._store import Store
        from protocols.events import BatteryEvent

        store = Store(journal_path(sim.dir / "data"), sim.site, max_bytes=limit)
        store.open()
        try:
            body = BatteryEvent(
                device="front-lock", door="front", level=90, low=False, critical=False
            ).model_dump_json()
            while (store.seq + 1) * 1100 < limit - 64 * 1024:
                now = time.time_ns()
                round_ = store.round([("a", "battery", "front", body, now)] * 50)
                assert round_.error is None, round_.error
            store.round([("m", store.seq, ())])  # published long ago
        finally:
            store.close()

    extra = f"[journal]\nmax_bytes = {limit}\n"
    async with home(tmp_path, broker, [org], extra=extra, before_start=nearly_full) as (
        sim,
        platform,
    ):
        platform.checker.first_expected = platform.checker.events[0]["seq"]
        anna = Carer("Anna", "anna", org, "verzorgende")
        sim.issue(anna, windows=inside)
        results: list[Result] = []
        for _ in range(400):
            results.append(await sim.attempt(anna, timeout=15))
            if await status_is(platform, "fallback"):
                break
        assert await status_is(platform, "fallback"), "max_bytes was never reached"
        results += [await sim.attempt(anna, timeout=15) for _ in range(5)]
        assert all(r.granted for r in results), results
        spill = sim.dir / "data" / "journal.spill"
        assert spill.stat().st_size >= 2 * 1024 * 1024  # its own reserved room
        await until(lambda: health_says(sim, "wait in its fallback file"))

        assert await sim.stop("gateway") == 0
        sim.write_config(broker.url, phone_link=f"device_timeout = {DEVICE_TIMEOUT}")
        await sim.start_gateway()
        await platform.wait_for(lambda e: e["type"] == "journal.recovered", timeout=60)
        await wait_published(platform, results)
        events = published_in_order(platform, results)
        assert all(e["sub"] == "anna" and e["type"] == "access.granted" for e in events)
        await until(lambda: status_is(platform, "ok"))
        code, out = await sim.cli("audit", "verify", "--config", str(sim.config))
        assert code == 0, out


async def test_the_writer_killed_again_and_again_while_phones_unlock(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """The journal's writer process is killed ten times while eight phones unlock in a
    loop: every phone hears ``granted``; every attempt is published once, with its id,
    in each phone's order, in a stream without a gap; the chain verifies; health is
    back to healthy. (On the old code the attempts that met a dead writer were answered
    with ids that were never published — and before that, not answered at all.)"""
    inside, _ = windows_now()
    org = west()
    extra = "[access]\nrate_limit = 1000\n"
    async with home(tmp_path, broker, [org], extra=extra) as (sim, platform):
        carers = [Carer(f"carer {i}", f"carer-{i}", org, "verzorgende") for i in range(8)]
        for c in carers:
            sim.issue(c, windows=inside)
        gateway = sim.procs["gateway"].pid
        stop = asyncio.Event()

        async def phone(c: Carer) -> list[Result]:
            out = []
            while not stop.is_set():
                out.append(await sim.attempt(c, timeout=15))
            return out

        async def killer() -> int:
            kills = 0
            while kills < 10:
                pid = writer_pid(gateway)
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                        kills += 1
                await asyncio.sleep(0.3)
            stop.set()
            return kills

        *per_phone, kills = await asyncio.gather(*(phone(c) for c in carers), killer())
        assert kills == 10
        results = [r for rs in per_phone for r in rs]
        assert results and all((r.granted, r.reason) == (True, "ok") for r in results)
        await wait_published(platform, results)
        for rs in per_phone:
            published_in_order(platform, rs)
        assert len({r.event for r in results}) == len(results)
        code, out = await sim.cli("audit", "verify", "--config", str(sim.config))
        assert code == 0, out
        await until(lambda: status_is(platform, "ok"))
        await until(lambda: health_says(sim, "lockgw: healthy"))


async def test_broker_down_the_door_works_and_the_stream_catches_up(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """The broker goes away: phones still open, attempts are journaled, health says the
    broker is gone; when it is back the platform receives them in order, no gap."""
    inside, _ = windows_now()
    org = west()
    async with home(tmp_path, broker, [org]) as (sim, platform):
        anna = Carer("Anna", "anna", org, "verzorgende")
        sim.issue(anna, windows=inside)
        await broker.stop()
        results = [await sim.attempt(anna, timeout=15) for _ in range(5)]
        assert all(r.granted for r in results), results
        await until(lambda: health_says(sim, "broker: not connected"))
        await broker.start()
        await wait_published(platform, results)
        published_in_order(platform, results, resent=True)
        assert await lock_state(sim) == "unlocked"


async def health_says(sim: SimSite, words: str) -> bool:
    _, out = await health(sim)
    return words in out
