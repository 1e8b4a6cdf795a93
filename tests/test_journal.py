"""The journal: gap-free seq across restarts, hash chain, outbox, retention, disk full."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.journal import (
    Journal,
    JournalCorrupt,
    JournalError,
    JournalForeign,
    envelope_from_wire,
    journal_path,
)
from gateway.journal._spill import RESERVE, spill_path
from protocols.events import (
    EVENT_MODELS,
    AccessDecisionEvent,
    BatteryEvent,
    Channel,
    Envelope,
    GatewayEvent,
)

SITE = "site-test"


def battery(level: int = 50) -> BatteryEvent:
    return BatteryEvent(device="front-lock", door="front", level=level, low=False, critical=False)


def granted(door: str = "front") -> AccessDecisionEvent:
    return AccessDecisionEvent(
        type="access.granted",
        door=door,
        device=f"{door}-lock",
        iss="org-a",
        sub="carer-1",
        role="verzorgende",
        purpose="planned",
        action="unlock",
        channel=Channel.PHONE,
        reason="ok",
    )


def jpath(tmp_path: Path) -> Path:
    return journal_path(tmp_path)


async def test_seq_is_gap_free_and_survives_a_restart(tmp_path: Path) -> None:
    async with Journal(jpath(tmp_path), SITE, retention_days=30) as j:
        envs = await asyncio.gather(*(j.emit(battery(i)) for i in range(50)))
        assert [e.seq for e in envs] == list(range(1, 51))
        assert j.last_seq == 50
    async with Journal(jpath(tmp_path), SITE, retention_days=30) as j:
        env = await j.emit(battery())
        assert env.seq == 51
        assert await j.verify() is None
        assert j.backlog() == 51


async def test_emit_returns_the_envelope_that_is_stored(tmp_path: Path) -> None:
    async with Journal(jpath(tmp_path), SITE, retention_days=30) as j:
        env = await j.emit(granted())
        [stored] = await j.read()
    assert stored == env
    wire = env.to_wire()
    assert wire["v"] == 1 and wire["seq"] == 1 and wire["site"] == SITE
    assert wire["type"] == "access.granted"
    assert wire["ts"].endswith("Z") and len(wire["ts"]) == len("2026-01-01T00:00:00.000Z")
    assert wire["id"][14] == "7"  # UUIDv7


async def test_no_event_body_field_shadows_an_envelope_field() -> None:
    for model in EVENT_MODELS:
        assert not set(model.model_fields) & {"v", "id", "seq", "ts", "site"}, model


async def test_outbox_drains_only_what_is_marked(tmp_path: Path) -> None:
    async with Journal(jpath(tmp_path), SITE, retention_days=30) as j:
        for i in range(10):
            await j.emit(battery(i))
        assert [s for s, _ in await j.outbox(limit=3)] == [1, 2, 3]
        assert await j.mark_published(4) == 4
        assert await j.mark_published(seqs=[6, 7]) == 2
        assert [e.seq for e in await j.unpublished(100)] == [5, 8, 9, 10]
        assert j.backlog() == 4
        assert [s for s, _ in await j.outbox(after=8)] == [9, 10]
    async with Journal(jpath(tmp_path), SITE, retention_days=30) as j:
        assert j.backlog() == 4
        assert [e.seq for e in await j.unpublished(100)] == [5, 8, 9, 10]


async def test_outbox_from_memory_answers_exactly_what_sqlite_answers(tmp_path: Path) -> None:
    """The publisher's reads come from the in-memory tail when it covers them; whatever
    the mix of emits, marks and cursors, the answer is the one SQLite gives."""
    import random

    rnd = random.Random(7)
    async with Journal(jpath(tmp_path), SITE, retention_days=30) as j:

        async def from_sqlite(after: int, limit: int) -> list[tuple[int, bytes]]:
            saved, j._tail = j._tail, type(j._tail)(maxlen=j._tail.maxlen)
            try:
                return await j.outbox(after, limit)  # no tail: the SQLite query
            finally:
                j._tail = saved

        served_from_memory = 0
        published = 0
        for _ in range(300):
            r = rnd.random()
            if r < 0.5:
                await asyncio.gather(*(j.emit(battery(i)) for i in range(rnd.randint(1, 5))))
            elif r < 0.75 and j.last_seq > published:
                published = rnd.randint(published + 1, j.last_seq)
                await j.mark_published(published)
            after = rnd.choice([0, published, published + rnd.randint(0, 6)])
            limit = rnd.randint(1, 8)
            tail_hit = bool(j._tail) and after >= j._published_upto and (
                j._tail[0][0] <= after + 1
            )
            served_from_memory += tail_hit
            assert await j.outbox(after, limit) == await from_sqlite(after, limit)
        assert served_from_memory > 50  # the tail did serve most of the publisher's reads
        await j.mark_published(seqs=[published + 1])  # a hole: SQLite answers from now on
        assert not j._tail
        assert await j.outbox(published, 5) == await from_sqlite(published, 5)


async def test_a_listener_hears_each_commit_and_the_close_until_removed(tmp_path: Path) -> None:
    heard: list[int] = []
    j = Journal(jpath(tmp_path), SITE, retention_days=30)
    await j.__aenter__()
    try:
        j.add_listener(lambda: heard.append(j.last_seq))
        await j.emit(battery())
        assert heard == [1]
        await j.mark_published(1)  # no new event: nobody is woken
        assert heard == [1]
    finally:
        await j.__aexit__(None, None, None)
    assert heard == [1, 1]  # the close wakes it too (a waiting publisher stops)
    quiet: list[int] = []

    def listener() -> None:
        quiet.append(1)

    async with Journal(jpath(tmp_path), SITE, retention_days=30) as j2:
        j2.add_listener(listener)
        j2.remove_listener(listener)
        await j2.emit(battery())
    assert quiet == []


async def test_a_tampered_row_is_the_first_broken_link(tmp_path: Path) -> None:
    path = jpath(tmp_path)
    async with Journal(path, SITE, retention_days=30) as j:
        for _ in range(20):
            await j.emit(granted())
    with sqlite3.connect(path) as db:
        payload = db.execute("SELECT payload FROM events WHERE seq = 7").fetchone()[0]
        db.execute(
            "UPDATE events SET payload = ? WHERE seq = 7",
            (payload.replace(b"carer-1", b"carer-2"),),
        )
    async with Journal(path, SITE, retention_days=30, read_only=True) as j:
        broken = await j.verify()
    assert broken is not None and broken.seq == 7 and "altered" in broken.problem


async def test_a_rehashed_row_breaks_the_next_link(tmp_path: Path) -> None:
    import hashlib

    path = jpath(tmp_path)
    async with Journal(path, SITE, retention_days=30) as j:
        for _ in range(5):
            await j.emit(granted())
    with sqlite3.connect(path) as db:
        prev = db.execute("SELECT hash FROM events WHERE seq = 2").fetchone()[0]
        payload = db.execute("SELECT payload FROM events WHERE seq = 3").fetchone()[0]
        forged = payload.replace(b"carer-1", b"carer-9")
        db.execute(
            "UPDATE events SET payload = ?, hash = ? WHERE seq = 3",
            (forged, hashlib.sha256(prev + forged).digest()),
        )
    async with Journal(path, SITE, retention_days=30, read_only=True) as j:
        broken = await j.verify()
    assert broken is not None and broken.seq == 4


async def test_a_deleted_row_is_a_missing_link(tmp_path: Path) -> None:
    path = jpath(tmp_path)
    async with Journal(path, SITE, retention_days=30) as j:
        for _ in range(5):
            await j.emit(granted())
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM events WHERE seq = 3")
    async with Journal(path, SITE, retention_days=30, read_only=True) as j:
        broken = await j.verify()
    assert broken is not None and broken.seq == 3 and "missing" in broken.problem


async def test_retention_deletes_old_published_rows_and_keeps_the_chain_verifiable(
    tmp_path: Path,
) -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    clock_at = [(now - timedelta(days=40)).timestamp()]
    async with Journal(jpath(tmp_path), SITE, retention_days=30, clock=lambda: clock_at[0]) as j:
        for _ in range(10):
            await j.emit(battery())
        clock_at[0] = (now - timedelta(days=1)).timestamp()
        for _ in range(5):
            await j.emit(battery())
        # nothing published yet: retention never deletes what the platform has not had
        assert await j.apply_retention(now) == 0
        await j.mark_published(12)
        assert await j.apply_retention(now) == 10
        cp = await j.checkpoint()
        assert cp is not None and cp.seq == 10
        assert [e.seq for e in await j.read()] == list(range(11, 16))
        assert await j.verify() is None
        env = await j.emit(battery())
        assert env.seq == 16
        assert await j.verify() is None
    path = jpath(tmp_path)
    with sqlite3.connect(path) as db:  # a forged checkpoint does not fit the chain
        db.execute("UPDATE checkpoints SET hash = zeroblob(32)")
    async with Journal(path, SITE, retention_days=30, read_only=True) as j:
        broken = await j.verify()
    assert broken is not None and broken.seq == 11


async def test_retention_of_every_row_keeps_seq_counting(tmp_path: Path) -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    old = (now - timedelta(days=400)).timestamp()
    path = jpath(tmp_path)
    async with Journal(path, SITE, retention_days=30, clock=lambda: old) as j:
        for _ in range(3):
            await j.emit(battery())
        await j.mark_published(3)
        assert await j.apply_retention(now) == 3
    async with Journal(path, SITE, retention_days=30) as j:
        assert j.last_seq == 3
        assert (await j.emit(battery())).seq == 4
        assert await j.verify() is None


async def until_recording(j: Journal, state: str, timeout: float = 30.0) -> None:
    """Until ``j.recording`` is ``state``; for ``ok`` also until ``journal.recovered``
    (which follows the replay) is journaled."""
    async with asyncio.timeout(timeout):
        while j.recording != state:  # noqa: ASYNC110 - the replay loop has no event to offer
            await asyncio.sleep(0.01)
        while state == "ok" and not await j.read(types=["journal.recovered"], limit=1):  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_a_full_journal_keeps_events_in_its_fallback_and_replays_them_in_order(
    tmp_path: Path,
) -> None:
    """``max_bytes`` reached: emit still records (the fallback file, seq 0 for now, the id
    and ts final), every later event waits behind the first one held, and once retention
    makes room they are journaled in their order with their ids, followed by
    ``journal.recovered``; nothing acknowledged before is lost, the chain verifies."""
    path = jpath(tmp_path)
    now = datetime(2026, 6, 1, tzinfo=UTC)
    clock_at = [(now - timedelta(days=40)).timestamp()]
    acked: list[Envelope] = []
    held: list[Envelope] = []
    async with Journal(
        path, SITE, retention_days=30, max_bytes=64 * 1024, clock=lambda: clock_at[0]
    ) as j:
        for _ in range(10_000):
            env = await j.emit(granted())
            if env.seq == 0:
                held.append(env)
                break
            acked.append(env)
        assert held, "the journal never filled up"
        assert j.recording == "fallback" and j.held == 1
        assert j.error is not None and "full" in j.error and "doors still open" in j.error
        clock_at[0] = (now - timedelta(days=1)).timestamp()
        held += [await j.emit(battery(i)) for i in range(20)]
        assert [e.seq for e in held] == [0] * 21 and j.held == 21
        assert spill_path(path).stat().st_size >= RESERVE  # its room is reserved
        # the outbox still drains while full; retention then makes room in the file
        await j.mark_published(len(acked))
        assert await j.apply_retention(now) > 0
        await until_recording(j, "ok")
        stored = await j.read()
        assert [e.id for e in stored[-22:-1]] == [e.id for e in held]
        assert [e.ts for e in stored[-22:-1]] == [e.ts for e in held]
        assert [e.body for e in stored[-22:-1]] == [e.body for e in held]
        recovered = stored[-1]
        assert recovered.type == "journal.recovered", recovered
        w = recovered.to_wire()
        assert (w["events"], w["first_seq"], w["last_seq"]) == (
            21, stored[-22].seq, stored[-2].seq,
        )  # fmt: skip
        assert w["since"] == held[0].ts and w["until"] == held[-1].ts and "full" in w["problem"]
        assert [e.seq for e in stored] == list(range(stored[0].seq, stored[-1].seq + 1))
        assert await j.verify() is None
        assert j.error is None and j.held == 0


async def test_events_held_at_a_stop_are_replayed_at_the_next_start(tmp_path: Path) -> None:
    path = jpath(tmp_path)
    async with Journal(path, SITE, retention_days=30, max_bytes=64 * 1024) as j:
        while (await j.emit(granted())).seq != 0:
            pass
        held = [await j.emit(battery(i)) for i in range(5)]
        last = j.last_seq
    assert spill_path(path).exists()
    async with Journal(path, SITE, retention_days=30) as j:  # no limit now
        await until_recording(j, "ok")
        stored = await j.read(after_seq=last)
        assert [e.id for e in stored[1:6]] == [e.id for e in held]
        assert stored[-1].type == "journal.recovered"
        assert stored[0].seq == last + 1
        assert await j.verify() is None
    async with Journal(path, SITE, retention_days=30) as j:  # replayed once only
        assert j.held == 0
        assert [e.id for e in await j.read(after_seq=last)] == [e.id for e in stored]


async def test_when_the_fallback_cannot_be_written_either_events_wait_in_memory(
    tmp_path: Path,
) -> None:
    """Neither SQLite nor the fallback file: the event is still answered (care first),
    reported ``unrecorded``, and journaled if the journal recovers while the gateway runs."""
    path = jpath(tmp_path)
    async with Journal(path, SITE, retention_days=30) as j:
        assert j._writer is not None and j._fallback is not None and j._fallback._spill
        j._fallback._spill.close()  # writes to it fail from now on (EBADF)
        j._writer.proc.kill()
        env = await j.emit(battery(7))
        assert env.seq == 0 and j.recording == "unrecorded" and j.not_durable == 1
        await until_recording(j, "ok")  # the writer is back: replayed from memory
        stored = await j.read()
        assert stored[-2].id == env.id
        rec = stored[-1].to_wire()
        assert rec["type"] == "journal.recovered" and rec["not_durable"] == 1


async def test_a_file_that_is_no_database_is_kept_aside_and_a_new_journal_says_so(
    tmp_path: Path,
) -> None:
    """(The cases of a journal with rows are in tests/test_journal_restart.py.)"""
    path = jpath(tmp_path)
    path.write_bytes(b"this is not a database" * 100)
    async with Journal(path, SITE, retention_days=30) as j:
        assert j.error is None and j.recording == "ok"
        env = await j.emit(battery())
        assert env.seq == 2
        first = (await j.read())[0]
        assert first.type == "journal.damaged" and first.seq == 1
        assert [r["type"] for r in j.restarts] == ["journal.damaged"]
    kept = [tmp_path / n for n in os.listdir(tmp_path) if ".damaged-" in n]
    assert len(kept) == 1 and kept[0].read_bytes() == b"this is not a database" * 100
    with pytest.raises(JournalCorrupt):
        async with Journal(kept[0], SITE, retention_days=30, read_only=True) as old:
            await old.read()


async def test_another_sites_journal_is_refused(tmp_path: Path) -> None:
    async with Journal(jpath(tmp_path), SITE, retention_days=30) as j:
        await j.emit(battery())
    with pytest.raises(JournalForeign, match="belongs to site"):
        async with Journal(jpath(tmp_path), "other-site", retention_days=30):
            pass


async def test_read_filters_for_the_views(tmp_path: Path) -> None:
    async with Journal(jpath(tmp_path), SITE, retention_days=30) as j:
        await j.emit(granted("front"))
        await j.emit(granted("back"))
        await j.emit(GatewayEvent(type="gateway.started", version="1"))
        await j.emit(granted("front"))
        assert [e.seq for e in await j.read(door="front")] == [1, 4]
        assert [e.seq for e in await j.read(types=["gateway.started"])] == [3]
        assert [e.seq for e in await j.read(limit=2, newest_first=True)] == [4, 3]
        future = datetime.now(UTC) + timedelta(days=1)
        assert await j.read(since=future) == []


async def test_first_seq_since_finds_the_tail_by_time(tmp_path: Path) -> None:
    """The relocker's start-up read (gateway.relock.unfinished_openings): the first row of
    a time window, from the time index, then the tail by seq."""
    async with Journal(jpath(tmp_path), SITE, retention_days=30) as j:
        assert await j.first_seq_since(datetime.now(UTC) - timedelta(days=1)) is None
        rows = [await j.emit(granted("front")) for _ in range(3)]
        assert await j.first_seq_since(datetime.now(UTC) - timedelta(days=1)) == 1
        same_ms = min(r.seq for r in rows if r.ts >= rows[2].ts)  # rows may share a ms
        assert await j.first_seq_since(rows[2].ts) == same_ms
        assert await j.first_seq_since(datetime.now(UTC) + timedelta(days=1)) is None


async def test_a_read_only_journal_refuses_to_write(tmp_path: Path) -> None:
    async with Journal(jpath(tmp_path), SITE, retention_days=30) as j:
        await j.emit(battery())
    async with Journal(jpath(tmp_path), SITE, retention_days=30, read_only=True) as j:
        assert j.last_seq == 1 and j.backlog() == 1
        with pytest.raises(JournalError, match="read-only"):
            await j.emit(battery())


def test_envelope_round_trips_through_the_wire() -> None:
    from gateway.journal._chain import uuid7, wire_payload

    payload = wire_payload(
        uuid7(), 3, "2026-01-01T00:00:00.000Z", json.dumps(SITE), granted().model_dump_json()
    )
    env = envelope_from_wire(payload)
    assert env.seq == 3 and env.body == granted()
    assert json.loads(payload) == env.to_wire()


def test_an_unexpected_error_fails_that_batch_and_the_store_carries_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gateway.journal._store as store

    real = store.wire_payload
    calls = {"n": 0}

    def flaky(*args: object) -> bytes:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("a bug")
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "wire_payload", flaky)
    s = store.Store(jpath(tmp_path), SITE, max_bytes=None)
    s.open()

    def append() -> store.Job:
        return ("a", "battery", "front", battery().model_dump_json(), 1_700_000_000_000_000_000)

    try:
        assert s.round([append(), append()]).results[1][1][1] == 2
        bad = s.round([append(), ("m", 1, ())])
        assert bad.error is not None and "internal error" in bad.error
        assert [ok for ok, _ in bad.results] == [False, False]
        assert bad.results[0][1][0] == "JournalError"
        ok = s.round([append()])
        assert ok.error is None and ok.results[0][1][1] == 3  # no gap: the failed one got no seq
        assert s.backlog == 3
    finally:
        s.close()
    conn = sqlite3.connect(jpath(tmp_path))
    try:
        from gateway.journal._store import verify_chain

        assert verify_chain(conn) is None
    finally:
        conn.close()


async def test_a_killed_writer_process_is_restarted_and_nothing_is_lost(
    tmp_path: Path,
) -> None:
    """Killed with events in flight and more arriving: none fails; what it had not
    confirmed and what came while it was gone wait in the fallback and are journaled
    after the restart, in order, once each (a replay skips what it had committed)."""
    import os
    import signal

    async with Journal(jpath(tmp_path), SITE, retention_days=30) as j:
        first = await asyncio.gather(*(j.emit(battery(i)) for i in range(5)))
        assert j._writer is not None
        in_flight = [asyncio.ensure_future(j.emit(battery(i))) for i in range(10)]
        await asyncio.sleep(0)  # each has been handed to the writer, in this order
        os.kill(j._writer.proc.pid, signal.SIGKILL)
        during = [await j.emit(battery(i)) for i in range(20)]
        envs = [*await asyncio.gather(*in_flight), *during]
        assert any(e.seq == 0 for e in envs)
        await until_recording(j, "ok")
        assert j.error is None
        env = await j.emit(battery(99))
        assert env.seq == j.last_seq
        assert await j.verify() is None
        stored = await j.read()
        seqs = [e.seq for e in stored]
        assert seqs == list(range(1, len(seqs) + 1))  # gap-free across the restart
        ids = [e.id for e in stored]
        assert len(ids) == len(set(ids))  # nothing twice
        order = [e.id for e in stored if e.id in {x.id for x in envs}]
        assert order == [e.id for e in envs]  # the order they were emitted in
        assert [e.seq for e in first] == [1, 2, 3, 4, 5]
        assert j.failures >= 1


@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("emit"), st.integers(1, 30)),
            st.tuples(st.just("mark"), st.integers(0, 40)),
            st.tuples(st.just("age"), st.integers(1, 100)),
            st.tuples(st.just("retain"), st.just(0)),
            st.tuples(st.just("reopen"), st.just(0)),
        ),
        max_size=12,
    )
)
@settings(max_examples=40)
def test_any_mix_of_emits_marks_retention_and_restarts_keeps_the_chain(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, int]]
) -> None:
    path = journal_path(tmp_path_factory.mktemp("prop"))
    now = [datetime(2026, 1, 1, tzinfo=UTC)]

    def clock() -> float:
        return now[0].timestamp()

    async def run() -> None:
        expected = 0
        published = 0
        j = Journal(path, SITE, retention_days=30, clock=clock)
        await j.__aenter__()
        try:
            for op, n in ops:
                if op == "emit":
                    envs = await asyncio.gather(*(j.emit(battery()) for _ in range(n)))
                    assert [e.seq for e in envs] == list(range(expected + 1, expected + n + 1))
                    expected += n
                elif op == "mark":
                    published = max(published, min(n, expected))
                    await j.mark_published(published)
                elif op == "age":
                    now[0] += timedelta(days=n)
                elif op == "retain":
                    await j.apply_retention(now[0])
                else:
                    await j.__aexit__(None, None, None)
                    j = Journal(path, SITE, retention_days=30, clock=clock)
                    await j.__aenter__()
                assert j.last_seq == expected
                assert j.backlog() == expected - published
                assert await j.verify() is None
                kept = [e.seq for e in await j.read()]
                assert kept == list(range(expected - len(kept) + 1, expected + 1))
                assert [e.seq for e in await j.unpublished(1000)] == list(
                    range(published + 1, expected + 1)
                )
        finally:
            await j.__aexit__(None, None, None)

    asyncio.run(run())


def test_only_a_round_that_records_something_waits_for_the_disk(tmp_path: Path) -> None:
    """Appends and retention commit with synchronous=FULL (fsync); a round of publish
    marks alone with NORMAL: losing one to a power cut only means publishing again."""
    from gateway.journal._store import Store

    s = Store(jpath(tmp_path), SITE, max_bytes=None)
    s.open()
    try:
        conn = s._conn
        assert conn is not None

        def mode() -> int:
            return int(conn.execute("PRAGMA synchronous").fetchone()[0])

        append = ("a", "battery", "front", battery().model_dump_json(), 1_700_000_000_000_000_000)
        s.round([append, append])
        assert mode() == 2  # FULL
        assert s.round([("m", 1, ())]).results == [(True, 1)]
        assert mode() == 1  # NORMAL
        s.round([("m", None, (2,)), append])  # an append in the round: FULL again
        assert mode() == 2
        assert s.backlog == 1
    finally:
        s.close()
    conn2 = sqlite3.connect(jpath(tmp_path))
    try:  # the marks are there for the next reader, and the chain holds
        assert conn2.execute("SELECT seq FROM outbox").fetchall() == [(3,)]
    finally:
        conn2.close()


def test_the_checkpointer_keeps_the_wal_short_without_the_writer_checkpointing(
    tmp_path: Path,
) -> None:
    """SQLite would copy the WAL back inside whichever commit crosses 1000 pages (a
    15-50 ms round at the door); the Checkpointer does it on its own connection between
    rounds, after which the writer starts the WAL over."""
    import time

    from gateway.journal._store import Checkpointer, Store

    def wal_frames_after(rounds: int, *, checkpointer: bool) -> int:
        path = tmp_path / f"checkpointer-{checkpointer}" / "journal.db"
        s = Store(path, SITE, max_bytes=None)
        s.open()
        ck = Checkpointer(path, interval=0.001)
        if checkpointer:
            ck.start()
        append = ("a", "battery", "front", battery().model_dump_json(), time.time_ns())
        try:
            for _ in range(rounds):
                assert s.round([append]).error is None
                ck.kick()
            if checkpointer:  # let it catch up once the rounds pause
                runs = ck.runs
                deadline = time.monotonic() + 10
                while ck.runs < runs + 2 and time.monotonic() < deadline:
                    ck.kick()
                    time.sleep(0.005)
                assert ck.runs >= runs + 2, ck.last_error
            assert s.round([append]).error is None
            conn = sqlite3.connect(path)
            try:  # (busy, frames in the WAL, frames copied back)
                return int(conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])
            finally:
                conn.close()
        finally:
            ck.stop()
            s.close()

    assert wal_frames_after(200, checkpointer=False) >= 200  # below SQLite's threshold
    assert wal_frames_after(200, checkpointer=True) < 10  # copied back, started over


def test_the_journal_works_on_uvloop(tmp_path: Path) -> None:
    """``LOCKGW_EVENT_LOOP=uvloop`` runs the daemon on uvloop: its transports differ."""
    uvloop = pytest.importorskip("uvloop")

    async def run() -> tuple[int, int]:
        async with Journal(jpath(tmp_path), SITE, retention_days=30) as j:
            envs = await asyncio.gather(*(j.emit(battery(i)) for i in range(20)))
            await j.mark_published(10)
            return envs[-1].seq, j.backlog()

    assert uvloop.run(run()) == (20, 10)


def _thread_nices(pid: int) -> dict[str, int]:
    """{thread name: nice} of a process, from /proc (Linux: nice is per thread)."""
    out: dict[str, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        stat = (task / "stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        out[(task / "comm").read_text().strip() + f"/{task.name}"] = int(fields[16])
    return out


async def test_the_writer_commits_at_a_higher_priority_and_checkpoints_at_the_daemons(
    tmp_path: Path,
) -> None:
    """``journal.writer_nice``: the writer's main thread (the commits) at that nice value
    where it may; the checkpointer thread back at the daemon's own."""
    import os

    base = os.getpriority(os.PRIO_PROCESS, 0)
    async with Journal(jpath(tmp_path), SITE, retention_days=30, writer_nice=base - 5) as j:
        await j.emit(battery())  # a round: the checkpointer thread runs
        writer = j._writer
        assert writer is not None
        pid = writer.proc.pid
        for _ in range(200):
            nices = _thread_nices(pid)
            if len(nices) >= 2:
                break
            await asyncio.sleep(0.01)
        main = nices.pop(next(k for k in nices if k.endswith(f"/{pid}")))
        if os.geteuid() == 0 or writer.nice_refused is None:
            assert (writer.nice, writer.nice_refused, main) == (base - 5, None, base - 5)
        else:  # not allowed here: said why, and the writer works at the usual priority
            assert "LimitNICE" in writer.nice_refused and main == base == writer.nice
        assert list(nices.values()) == [base]  # the checkpointer
        assert (await j.emit(battery())).seq == 2


def test_raise_priority_says_why_it_could_not(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from gateway.journal._child import raise_priority

    def refuse(*_: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "setpriority", refuse)
    now = os.getpriority(os.PRIO_PROCESS, 0)
    assert raise_priority(now + 1) == (now, None)  # never lowers the priority
    nice, why = raise_priority(now - 10)
    assert nice == now and why is not None
    assert f"nice {now - 10} refused (Permission denied)" in why and "LimitNICE" in why


async def test_a_writer_killed_for_raising_its_priority_starts_again_without(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A system-call filter that kills on setpriority (an older unit file): the journal
    still opens, at normal priority. Any other failure to start is not a reason to."""
    from gateway.journal import _writer

    real = _writer.WriterProcess.start.__func__  # type: ignore[attr-defined]
    asked: list[int] = []
    refusal: type[JournalError] = _writer.SyscallRefused

    async def start(cls: type, *args: object, nice: int = 0) -> object:
        asked.append(nice)
        if nice != 0:
            raise refusal("the journal's writer process stopped (exit code -31)")
        return await real(cls, *args, nice=nice)

    monkeypatch.setattr(_writer.WriterProcess, "start", classmethod(start))
    async with Journal(jpath(tmp_path), SITE, retention_days=30, writer_nice=-10) as j:
        assert (await j.emit(battery())).seq == 1
        assert j.writer_nice == 0
    assert asked == [-10, 0]

    asked.clear()
    refusal = JournalError  # e.g. it could not open the file: that is not about priority
    async with Journal(jpath(tmp_path), SITE, retention_days=30, writer_nice=-10) as j:
        # the door keeps working: events wait in the fallback, the writer is tried again
        assert j.error is not None and "exit code" in j.error
        assert (await j.emit(battery())).seq == 0 and j.recording == "fallback"
    assert asked[0] == -10 and 0 not in asked  # never tried at another priority


async def test_a_writer_killed_by_sigsys_before_ready_is_told_apart(tmp_path: Path) -> None:
    """What a seccomp kill looks like from the daemon: the child dies of SIGSYS before
    its ready frame (here a stand-in child that does just that)."""
    import signal

    from gateway.journal import _writer

    stand_in = tmp_path / "gateway" / "journal"
    stand_in.mkdir(parents=True)
    (tmp_path / "gateway" / "__init__.py").write_text("")
    (stand_in / "__init__.py").write_text("")
    (stand_in / "_child.py").write_text(
        # after a moment, as the real one (its imports take ~70 ms); no core file
        "import os, resource, time\nresource.setrlimit(resource.RLIMIT_CORE, (0, 0))\n"
        f"time.sleep(0.2)\nos.kill(os.getpid(), {int(signal.SIGSYS)})\n"
    )
    real_exec = asyncio.create_subprocess_exec

    async def exec_stand_in(*argv: str, **kw: object) -> object:
        kw["cwd"] = tmp_path  # ``python -m`` looks in the working directory first
        return await real_exec(*argv, **kw)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(asyncio, "create_subprocess_exec", exec_stand_in)
        with pytest.raises(_writer.SyscallRefused):
            await _writer.WriterProcess.start(
                jpath(tmp_path), SITE, None, lambda *_: None, lambda *_: None, nice=-10
            )
