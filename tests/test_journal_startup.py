"""The journal's start-up check does not grow with its age: ``lockgw run`` checks only what
the head file does not vouch for before READY (the tail check), and the full check
(every row's link, ``quick_check``) after READY, in a process of its own. An old row
edited while the gateway was stopped is still found, and handled as a damage at start
is: the file moved aside, ``journal.damaged`` on the stream and in health.

First with real processes (``lockgw run``, a lock simulator, mosquitto, a phone), then
the journal alone (its real writer and check processes).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from test_door_faults import health, log_lines, until
from test_door_process import home, west, windows_now
from test_journal import SITE, battery, jpath
from test_journal_restart import _fill, _kept, checkpoint, edit_a_row

from gateway.journal import Journal, JournalCorrupt
from gateway.journal._head import Head, encode, head_path, read_head
from simulators.broker import MosquittoBroker
from simulators.site import Carer

pytestmark = pytest.mark.slow


async def test_lockgw_run_is_ready_before_the_full_check_which_still_finds_an_edited_row(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """A whole journal: the restarted gateway opens it on the tail check and the full
    check after READY finds it whole. Then an old row is edited while the gateway is
    stopped (before the head file's seq: the tail check cannot see it). The gateway
    starts and is ready — ``gateway.started`` is journaled and published *before* the
    finding — and the full check after READY finds the edit: ``journal.damaged``
    (linked to the row before the edited one), the file kept, health says so, the door
    works, verify follows the restart."""
    inside, _ = windows_now()
    org = west()
    async with home(tmp_path, broker, [org]) as (sim, platform):
        anna = Carer("Anna", "anna", org, "verzorgende")
        sim.issue(anna, windows=inside)
        await _fill(sim, anna, 20)
        assert await sim.stop("gateway") == 0
        path = sim.dir / "data" / "journal.sqlite3"
        head, problem = read_head(head_path(path))
        assert problem is None and head is not None

        await sim.start_gateway()  # a whole journal, with its head file
        await until(_logged(sim.dir, "journal.checked", 1))
        opened = log_lines(sim.dir, "journal.open")
        assert [o["checked"] for o in opened] == ["full", "tail"], opened  # new, then vouched
        assert not log_lines(sim.dir, "journal.damage_found")
        r = await sim.attempt(anna)
        assert r.granted, r
        await platform.wait_for(lambda e: e.get("id") == r.event)
        assert await sim.stop("gateway") == 0

        last = platform.checker.last_seq
        head, _ = read_head(head_path(path))
        assert head is not None
        checkpoint(path)
        conn = sqlite3.connect(path)
        edited = conn.execute(
            "SELECT min(seq) FROM events WHERE type = 'access.granted'"
        ).fetchone()[0]
        conn.close()
        assert edited < head.seq
        edit_a_row(path)

        await sim.start_gateway()
        ev = await platform.wait_for(lambda e: e["type"] == "journal.damaged", after_seq=last)
        started = await platform.wait_for(lambda e: e["type"] == "gateway.started", after_seq=last)
        # the gateway was ready (and said so on the stream) before the full check ended
        assert started["seq"] < ev["seq"], (started, ev)
        assert (ev["link_seq"], ev["link_from"]) == (edited - 1, "journal"), ev
        assert f"seq {edited}" in ev["problem"], ev
        kept = Path(ev["kept_as"])
        assert _kept(kept.parent) == [kept]
        found = log_lines(sim.dir, "journal.damage_found")
        assert len(found) == 1 and f"seq {edited}" in found[0]["problem"], found
        assert not platform.checker.gaps()

        result = await sim.attempt(anna)
        assert result.granted, result
        granted = await platform.wait_for(lambda e: e.get("id") == result.event)
        assert granted["seq"] > ev["seq"], granted

        code, out = await health(sim)
        assert code == 1 and "journal: found damaged" in out and str(kept) in out, out
        code, out = await sim.cli("audit", "verify", "--config", str(sim.config))
        assert code == 0, out
        assert f"documented restart: restarted at seq {ev['seq']} (journal.damaged)" in out, out


def _logged(sim_dir: Path, event: str, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(log_lines(sim_dir, event)) >= n

    return check


# -- the journal alone ----------------------------------------------------------------------


async def _write(path: Path, n: int) -> int:
    async with Journal(path, SITE, retention_days=30) as j:
        for _ in range(n):
            await j.emit(battery())
        return j.last_seq


def _edit_payload(path: Path, seq: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute(
        "UPDATE events SET payload = replace(payload, '\"level\":50', '\"level\":99') "
        "WHERE seq = ?",
        (seq,),
    )
    assert conn.total_changes == 1
    conn.commit()
    conn.close()


def _tail(path: Path) -> Journal:
    return Journal(path, SITE, retention_days=30, startup_check="tail")


async def test_a_whole_journal_opens_on_the_tail_check_and_the_full_check_agrees(
    tmp_path: Path,
) -> None:
    path = jpath(tmp_path)
    last = await _write(path, 50)
    async with _tail(path) as j:
        assert j.checked == "tail" and j.restarts == [] and j.error is None
        task = j.start_background_check()
        assert task is not None
        assert await task is None
        assert j.start_background_check() is None  # once per start
        assert (await j.emit(battery())).seq == last + 1
        assert await j.verify() is None
    head, _ = read_head(head_path(path))
    assert head is not None and head.seq == last + 1
    # the full check at start (the default) needs no check after it
    async with Journal(path, SITE, retention_days=30) as j:
        assert j.checked == "full" and j.start_background_check() is None


async def test_rows_after_the_head_file_are_checked_at_start(tmp_path: Path) -> None:
    """The head file lags the journal (a power cut between a commit and its head write):
    the rows after it are walked at start; an edited one among them is found before
    anything is written, as before."""
    path = jpath(tmp_path)
    await _write(path, 40)
    old_head = head_path(path).read_bytes()
    await _write(path, 10)
    head_path(path).write_bytes(old_head)  # says seq 40; the journal holds 50
    async with _tail(path) as j:
        assert j.checked == "tail" and j.restarts == [] and j.last_seq == 50
    head_path(path).write_bytes(old_head)
    checkpoint(path)
    _edit_payload(path, 45)
    async with _tail(path) as j:
        assert j.checked == "full"
        assert [r["type"] for r in j.restarts] == ["journal.damaged"]
        assert (j.restarts[0]["link_seq"], j.restarts[0]["seq"]) == (44, 51)
        assert j.start_background_check() is None


async def test_an_edited_old_row_is_found_after_start_and_a_new_journal_follows(
    tmp_path: Path,
) -> None:
    """Row 10 of 60 edited, the head file at 60: the tail check cannot see it and the
    journal opens; the full check after start finds it: health's error says so, the
    writer is replaced by one that checks in full, the file is moved aside and
    ``journal.damaged`` follows every seq used so far, linked to row 9. An event emitted
    after the finding lands in the new journal with the id it was given."""
    path = jpath(tmp_path)
    await _write(path, 60)
    checkpoint(path)
    _edit_payload(path, 10)
    async with _tail(path) as j:
        assert j.checked == "tail" and j.restarts == []  # not seen at start
        assert (await j.emit(battery())).seq == 61  # the gateway works meanwhile
        task = j.start_background_check()
        assert task is not None
        found = await task
        assert found is not None and "broken at seq 10" in found, found
        assert j.error is not None and "found by the check after start" in j.error
        after = await j.emit(battery(7))  # waits in the fallback, or goes to the new journal

        async def restarted() -> bool:
            return bool(j.restarts) and j.error is None and j.held == 0

        await until(restarted)
        (r,) = j.restarts
        assert r["type"] == "journal.damaged" and r["seq"] == 62, r
        assert r["link_seq"] == 9 and r["kept_as"], r
        assert j.checked == "full"
        rows = await j.read()
        assert rows[0].type == "journal.damaged" and rows[0].seq == 62
        assert after.id in [e.id for e in rows[1:]]
        assert await j.verify() is None
        assert (await j.restarts_recorded())[0].link_seq == 9
    kept = _kept(tmp_path)
    assert len(kept) == 1 and str(kept[0]) == r["kept_as"]
    # the kept file still has what was written after the start (row 61)
    conn = sqlite3.connect(kept[0])
    assert conn.execute("SELECT max(seq) FROM events").fetchone()[0] == 61
    conn.close()
    # the next start is clean: the new journal, vouched for by its head file
    async with _tail(path) as j:
        assert j.checked == "tail" and j.restarts == []
        task = j.start_background_check()
        assert task is not None and await task is None


@pytest.mark.parametrize("head_file", ["missing", "corrupt", "wrong_hash", "ahead"])
async def test_without_a_head_file_to_vouch_the_full_check_runs_at_start(
    tmp_path: Path, head_file: str
) -> None:
    """No head file, a damaged one, one whose row now has another link, or one beyond the
    journal's end: the tail check cannot vouch for the journal, and the full check runs
    at start as before — an edited old row is found before anything is written."""
    path = jpath(tmp_path)
    last = await _write(path, 30)
    hp = head_path(path)
    if head_file == "missing":
        hp.unlink()
    elif head_file == "corrupt":
        hp.write_bytes(b"{not json" + b" " * 100)
    elif head_file == "wrong_hash":
        hp.write_bytes(encode(Head(SITE, last, "ab" * 32)))
    else:
        hp.write_bytes(encode(Head(SITE, last + 5, "ab" * 32)))
    expect_lost = head_file == "ahead"
    async with _tail(path) as j:
        assert j.checked == "full"
        assert [r["type"] for r in j.restarts] == (["journal.lost"] if expect_lost else [])
    if expect_lost:
        return
    checkpoint(path)
    _edit_payload(path, 3)
    if head_file == "missing":
        hp.unlink()
    elif head_file == "corrupt":
        hp.write_bytes(b"{not json" + b" " * 100)
    else:
        hp.write_bytes(encode(Head(SITE, last, "ab" * 32)))
    async with _tail(path) as j:
        assert j.checked == "full"
        assert [r["type"] for r in j.restarts] == ["journal.damaged"]
        assert j.restarts[0]["link_seq"] == 2
    assert len(_kept(tmp_path)) == 1
    assert not any(n.endswith(".inspect") for n in os.listdir(tmp_path))


async def test_after_a_corrupt_commit_the_next_writer_checks_in_full(tmp_path: Path) -> None:
    """A round that SQLite answered "malformed" while running (the writer's answer is
    given to the journal as the real one would be): the writer is replaced, and the new
    one makes the full check — a tail check could vouch for the damaged file again and
    the gateway would go round in circles on it."""
    from gateway.journal._store import Round

    path = jpath(tmp_path)
    await _write(path, 20)
    async with _tail(path) as j:
        assert j.checked == "tail"
        first = j._writer
        fut = asyncio.get_running_loop().create_future()
        malformed = "journal: database disk image is malformed"
        corrupt = Round([(False, ("JournalCorrupt", malformed))], 20, 0, malformed, False)
        j._delivered(corrupt, [(fut, None)])
        with pytest.raises(JournalCorrupt):
            await fut

        async def replaced() -> bool:
            return j._writer is not None and j._writer is not first and j.error is None

        await until(replaced)
        assert j.checked == "full" and j.restarts == []  # the file was whole after all
        assert (await j.emit(battery())).seq == 21
