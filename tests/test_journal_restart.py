"""A damaged or lost journal at start-up (issue 15, item 2): ``lockgw run`` keeps the
doors working, moves a damaged file aside, starts a new journal whose first row
(``journal.damaged`` / ``journal.lost``) links to the last row that verified, and says
so on the stream, in health and in ``lockgw audit verify``.

First with real processes (``lockgw run``, a lock simulator over bleak, mosquitto, a
phone), then each kind of damage on the journal alone.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from test_door_faults import health, until
from test_door_process import home, west, windows_now
from test_journal import SITE, battery, jpath

from gateway.journal import Journal
from gateway.journal._head import head_path, read_head
from simulators.broker import MosquittoBroker
from simulators.site import Carer, SimSite

pytestmark = pytest.mark.slow


def edit_a_row(path: Path) -> None:
    """Change who came in on one old row (an insider covering tracks)."""
    conn = sqlite3.connect(path)
    seq = conn.execute("SELECT min(seq) FROM events WHERE type = 'access.granted'").fetchone()[0]
    conn.execute(
        "UPDATE events SET payload = replace(payload, '\"sub\":\"anna\"', '\"sub\":\"bram\"') "
        "WHERE seq = ?",
        (seq,),
    )
    conn.commit()
    conn.close()


def garbage_in_the_middle(path: Path) -> None:
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.seek(size // 2)
        f.write(os.urandom(8192))


def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def checkpoint(path: Path) -> None:
    """Everything into the main file (as a stopped gateway leaves it), WAL emptied."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


@pytest.mark.parametrize(
    "damage", [edit_a_row, garbage_in_the_middle, truncate], ids=lambda f: f.__name__
)
async def test_lockgw_run_on_a_damaged_journal_keeps_the_doors_and_says_so(
    tmp_path: Path, broker: MosquittoBroker, damage: Callable[[Path], None]
) -> None:
    """The gateway journaled a hundred unlocks and stopped; the journal file is then
    damaged. ``lockgw run`` starts anyway: the old file is kept aside, the platform
    hears ``journal.damaged`` (seq after the last it had, link to the last row that
    verified), health says so, Anna's phone still opens the door and her entry is
    journaled and published after it, and ``lockgw audit verify`` follows the chain
    across the documented restart."""
    inside, _ = windows_now()
    org = west()
    async with home(tmp_path, broker, [org]) as (sim, platform):
        anna = Carer("Anna", "anna", org, "verzorgende")
        sim.issue(anna, windows=inside)
        await _fill(sim, anna)
        last = platform.checker.last_seq
        assert await sim.stop("gateway") == 0
        path = sim.dir / "data" / "journal.sqlite3"
        checkpoint(path)
        damage(path)

        await sim.start_gateway()
        ev = await platform.wait_for(lambda e: e["type"] == "journal.damaged", after_seq=last)
        assert ev["seq"] > last, ev  # no seq used twice: the platform's stream goes on
        # the last row that verified (garbage in an index page of a small journal may
        # leave none: then the link is the genesis)
        assert ev["link_seq"] < last, ev
        assert ev["link_from"] == ("journal" if ev["link_seq"] else "genesis"), ev
        kept = Path(ev["kept_as"])
        assert kept.name.startswith("journal.sqlite3.damaged-") and _kept(kept.parent) == [kept]
        assert ev["problem"], ev
        await platform.wait_for(lambda e: e["type"] == "gateway.started", after_seq=last)

        result = await sim.attempt(anna)
        assert result.granted, result
        granted = await platform.wait_for(lambda e: e.get("id") == result.event)
        assert granted["sub"] == "anna" and granted["seq"] > ev["seq"]
        assert not platform.checker.gaps()

        code, out = await health(sim)
        assert code == 1 and "journal: found damaged" in out, out
        assert str(kept) in out, out

        code, out = await sim.cli("audit", "verify", "--config", str(sim.config))
        assert code == 0, out
        assert f"documented restart: restarted at seq {ev['seq']} (journal.damaged)" in out, out
        assert f"links to seq {ev['link_seq']}" in out, out
        # the old file, verified on its own, breaks right after the row the new one links to
        code, out = await sim.cli("audit", "verify", "--journal", str(kept))
        assert code == 1 and ("BROKEN" in out or "is damaged" in out), out

        # a restart of the gateway does not restart the journal again
        assert await sim.stop("gateway") == 0
        await sim.start_gateway()
        await platform.wait_for(lambda e: e["type"] == "gateway.started", after_seq=granted["seq"])
        code, out = await health(sim)
        assert "journal: damaged" not in out, out
        assert _kept(kept.parent) == [kept]


@pytest.mark.parametrize("how", ["deleted", "emptied"])
async def test_a_journal_that_disappears_does_not_restart_at_seq_1(
    tmp_path: Path, broker: MosquittoBroker, how: str
) -> None:
    """The journal file is deleted (or truncated to nothing) while the gateway is
    stopped. At the next start the head file says where the chain stood: the journal
    goes on after that seq with ``journal.lost`` linking to it; health says events were
    lost; the door works."""
    inside, _ = windows_now()
    org = west()
    async with home(tmp_path, broker, [org]) as (sim, platform):
        anna = Carer("Anna", "anna", org, "verzorgende")
        sim.issue(anna, windows=inside)
        first = await sim.attempt(anna)
        assert first.granted, first
        await platform.wait_for(lambda e: e.get("id") == first.event)
        assert await sim.stop("gateway") == 0
        last = platform.checker.last_seq
        data = sim.dir / "data"
        path = data / "journal.sqlite3"
        head, problem = read_head(head_path(path))
        assert problem is None and head is not None and head.seq == last
        checkpoint(path)
        if how == "deleted":
            for p in data.glob("journal.sqlite3*"):
                p.unlink()
        else:
            path.write_bytes(b"")

        await sim.start_gateway()
        ev = await platform.wait_for(lambda e: e["type"] == "journal.lost", after_seq=last)
        assert ev["seq"] == last + 1, ev
        assert (ev["link_seq"], ev["link_from"]) == (last, "head_file"), ev
        assert ev["link_hash"] == head.hash
        assert ("empty" if how == "emptied" else "missing") in ev["problem"], ev
        result = await sim.attempt(anna)
        assert result.granted, result
        await platform.wait_for(lambda e: e.get("id") == result.event)
        assert not platform.checker.gaps()
        await until(lambda: _health_says(sim, "journal: events lost at start"))
        code, out = await sim.cli("audit", "verify", "--config", str(sim.config))
        assert code == 0 and "documented restart" in out and "head_file" in out, out


async def _health_says(sim: SimSite, words: str) -> bool:
    _, out = await health(sim)
    return words in out


async def _fill(sim: SimSite, anna: Carer, n: int = 40) -> None:
    """Unlocks enough that the journal spans more than a few pages."""
    for _ in range(n):
        r = await sim.attempt(anna)
        assert r.granted, r


# -- the journal alone ----------------------------------------------------------------------


async def _write(path: Path, n: int) -> int:
    async with Journal(path, SITE, retention_days=30) as j:
        for _ in range(n):
            await j.emit(battery())
        return j.last_seq


async def test_rows_lost_from_the_end_go_on_in_the_same_file(tmp_path: Path) -> None:
    """The WAL holding the last commits is deleted (the main file is whole but behind
    the head file): ``journal.lost`` goes on in the same file after the head's seq,
    linked to the journal's own last row; verify follows it."""
    path = jpath(tmp_path)
    await _write(path, 20)
    checkpoint(path)
    snapshot = path.read_bytes()
    last = await _write(path, 5)
    checkpoint(path)
    path.write_bytes(snapshot)  # the file as it was before the last five (a restored copy)
    async with Journal(path, SITE, retention_days=30) as j:
        assert [r["type"] for r in j.restarts] == ["journal.lost"]
        rows = await j.read()
        assert [e.seq for e in rows][:20] == list(range(1, 21))
        lost = rows[20]
        assert lost.type == "journal.lost" and lost.seq == last + 1
        body = lost.body.model_dump()
        assert (body["link_seq"], body["link_from"]) == (20, "journal")
        assert await j.verify() is None
        assert (await j.restarts_recorded())[0].seq == last + 1


async def test_a_damaged_head_file_with_a_missing_journal_is_still_reported(
    tmp_path: Path,
) -> None:
    path = jpath(tmp_path)
    await _write(path, 3)
    for name in os.listdir(tmp_path):
        if name.startswith("journal.sqlite3"):
            os.unlink(tmp_path / name)
    head_path(path).write_bytes(b"{not json")
    async with Journal(path, SITE, retention_days=30) as j:
        rows = await j.read()
        assert rows[0].type == "journal.lost" and rows[0].seq == 1
        assert "head file is damaged" in rows[0].body.model_dump()["problem"]


async def test_a_second_damage_links_across_both_restarts(tmp_path: Path) -> None:
    """Damaged, restarted, damaged again: the newest journal links to the last row that
    verified in the one before, and verify is intact."""
    path = jpath(tmp_path)
    await _write(path, 30)
    checkpoint(path)
    garbage_in_the_middle(path)
    await _write(path, 30)
    checkpoint(path)
    edit = sqlite3.connect(path)
    edit.execute(
        "UPDATE events SET ts = '2020-01-01T00:00:00.000Z' "
        "WHERE seq = (SELECT max(seq) FROM events)"
    )
    edit.commit()
    edit.close()
    async with Journal(path, SITE, retention_days=30) as j:
        assert [r["type"] for r in j.restarts] == ["journal.damaged"]
        assert await j.verify() is None
        first = (await j.read())[0].body.model_dump()
        assert first["link_seq"] > 30
        await j.emit(battery())
    assert len(_kept(tmp_path)) == 2


def _kept(directory: Path) -> list[Path]:
    """The damaged journals kept aside (not their -wal / -shm)."""
    return sorted(
        p
        for p in directory.iterdir()
        if ".damaged-" in p.name and not p.name.endswith(("-wal", "-shm"))
    )


async def test_a_whole_journal_is_opened_as_it_is(tmp_path: Path) -> None:
    """Start after start, nothing is moved and no restart is made; the head file
    follows the chain."""
    path = jpath(tmp_path)
    for n in (1, 2, 3):
        last = await _write(path, 5)
        assert last == 5 * n
        head, problem = read_head(head_path(path))
        assert problem is None and head is not None and head.seq == last
    assert [n for n in os.listdir(tmp_path) if "damaged" in n or "lost" in n] == []
    assert oct(os.stat(head_path(path)).st_mode & 0o777) == "0o600"
