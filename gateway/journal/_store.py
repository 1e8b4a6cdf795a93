"""SQLite access for the journal: schema, the writer thread (group commit), read queries.

Everything here runs on a thread of its own, never on the event loop. The writer
thread owns the only write connection; it takes every job queued since its last
commit and applies them in one transaction (group commit), then hands the results
back to the loop with one ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import json
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from protocols.errors import JournalCorrupt, JournalError, JournalFull
from protocols.events import Envelope, EventBody

from ._chain import GENESIS, link, utc_ms, uuid7, wire_payload

__all__ = ["BrokenLink", "Checkpoint", "Committed", "Writer", "blob", "connect", "map_error"]

SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq     INTEGER PRIMARY KEY,
    id      TEXT NOT NULL,
    ts      TEXT NOT NULL,
    type    TEXT NOT NULL,
    door    TEXT,
    payload BLOB NOT NULL,
    hash    BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS checkpoints (
    seq     INTEGER PRIMARY KEY,
    hash    BLOB NOT NULL,
    ts      TEXT NOT NULL,
    created TEXT NOT NULL
);
"""

# primary SQLite result codes (the low byte of sqlite_errorcode)
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_NOTADB = 26


class BrokenLink(NamedTuple):
    """The first place where the chain does not hold: ``seq`` and what is wrong there."""

    seq: int
    problem: str

    def __str__(self) -> str:
        return f"seq {self.seq}: {self.problem}"


class Checkpoint(NamedTuple):
    """Where retention cut the chain: the last deleted row's ``seq``, ``hash`` and ``ts``."""

    seq: int
    hash: bytes
    ts: str


def map_error(exc: sqlite3.Error, path: Path, max_bytes: int | None) -> JournalError:
    """Turn an sqlite3 error into the typed journal error a person can act on."""
    code = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
    text = str(exc)
    if code == _SQLITE_FULL or "disk is full" in text:
        limit = f" or its size limit of {max_bytes} bytes" if max_bytes else ""
        return JournalFull(
            f"journal {path}: the disk{limit} is full ({text}); new events are not recorded "
            "but doors still open; free disk space (old events go by retention_days)"
        )
    if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or "malformed" in text or "not a database" in text:
        return JournalCorrupt(
            f"journal {path} is damaged ({text}); new events are not recorded but doors "
            "still open; stop lockgw, move the file aside (keep it for the audit) and restart"
        )
    return JournalError(f"journal {path}: {text}")


def connect(path: Path, *, read_only: bool, max_bytes: int | None = None) -> sqlite3.Connection:
    if read_only:
        if not path.exists():
            raise JournalError(f"no journal at {path} (check --journal or the config's data_dir)")
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA busy_timeout = 5000")
        return conn
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 5000")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise JournalError(f"journal {path}: cannot switch to WAL mode (got {mode})")
    conn.execute("PRAGMA synchronous = FULL")
    if max_bytes is not None:
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        conn.execute(f"PRAGMA max_page_count = {max(max_bytes // page_size, 16)}")
    return conn


@dataclass(slots=True)
class _Append:
    body: EventBody
    body_json: str
    fut: asyncio.Future[Envelope]


@dataclass(slots=True)
class _Mark:
    up_to: int | None
    seqs: tuple[int, ...]
    fut: asyncio.Future[int] | None


@dataclass(slots=True)
class _Retain:
    cutoff: str
    created: str
    fut: asyncio.Future[int]


_Job = _Append | _Mark | _Retain


@dataclass(slots=True)
class Committed:
    """What one writer round tells the loop."""

    results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]
    last_seq: int
    backlog_delta: int
    error: str | None
    appended: bool
    failed_appends: int = 0
    #: (seq, wire payload) of every event this round committed, in order: the journal
    #: keeps the newest in memory so the publisher need not read back what was written
    rows: list[tuple[int, bytes]] = field(default_factory=list)


@dataclass
class _State:
    seq: int = 0
    head: bytes = GENESIS
    backlog: int = 0
    pending: list[_Job] = field(default_factory=list)


class Writer(threading.Thread):
    """The one thread that writes the journal (group commit)."""

    MAX_BATCH = 2000

    def __init__(
        self,
        path: Path,
        site: str,
        loop: asyncio.AbstractEventLoop,
        deliver: Callable[[Committed], None],
        *,
        max_bytes: int | None,
        clock_ns: Callable[[], int],
    ) -> None:
        super().__init__(name="journal-writer", daemon=True)
        self.path = path
        self.site = site
        self._site_json = json.dumps(site)
        self._loop = loop
        self._deliver = deliver
        self._max_bytes = max_bytes
        self._clock_ns = clock_ns
        self._q: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._conn: sqlite3.Connection | None = None
        self.state = _State()
        self.ready: asyncio.Future[None] = loop.create_future()

    # -- called from the loop --------------------------------------------------
    def submit(self, job: _Job) -> None:
        self._q.put(job)

    def stop(self) -> None:
        self._q.put(None)

    # -- the thread ------------------------------------------------------------
    def _open(self) -> None:
        conn = connect(self.path, read_only=False, max_bytes=self._max_bytes)
        self._conn = conn
        conn.executescript(_SCHEMA)
        row = conn.execute("SELECT value FROM meta WHERE key = 'site'").fetchone()
        if row is None:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO meta VALUES ('site', ?), ('schema', ?)", (self.site, SCHEMA_VERSION)
            )
            conn.execute("COMMIT")
        elif row[0] != self.site:
            raise JournalError(
                f"journal {self.path} belongs to site {row[0]!r}, not {self.site!r}; "
                "point data_dir at this site's own directory"
            )
        last = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        if last is None:
            cp = conn.execute(
                "SELECT seq, hash FROM checkpoints ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            last = cp if cp is not None else (0, GENESIS)
        self.state.seq, self.state.head = int(last[0]), bytes(last[1])
        self.state.backlog = int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def run(self) -> None:
        try:
            self._open()
        except (sqlite3.Error, JournalError, OSError) as exc:
            err = (
                exc if isinstance(exc, JournalError) else _map_any(exc, self.path, self._max_bytes)
            )
            self._loop.call_soon_threadsafe(_set_exc, self.ready, err)
            return
        self._loop.call_soon_threadsafe(_set_result, self.ready, None)
        try:
            self._serve()
        finally:
            assert self._conn is not None
            self._conn.close()

    def _serve(self) -> None:
        while True:
            job = self._q.get()
            if job is None:
                return
            batch = [job]
            stop = False
            while len(batch) < self.MAX_BATCH:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._loop.call_soon_threadsafe(self._deliver, self._round(batch))
            if stop:
                return

    def _round(self, batch: list[_Job]) -> Committed:
        conn = self._conn
        assert conn is not None
        st = self.state
        seq0, head0, backlog0 = st.seq, st.head, st.backlog
        results: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        appended = False
        try:
            conn.execute("BEGIN IMMEDIATE")
            rows: list[tuple[int, str, str, str, str | None, bytes, bytes]] = []
            written: list[tuple[int, bytes]] = []
            now = self._clock_ns()
            ts = utc_ms(now)
            ms = now // 1_000_000
            for job in batch:
                if isinstance(job, _Append):
                    st.seq += 1
                    eid = uuid7(ms)
                    payload = wire_payload(eid, st.seq, ts, self._site_json, job.body_json)
                    st.head = link(st.head, payload)
                    door = getattr(job.body, "door", None)
                    rows.append((st.seq, eid, ts, job.body.type, door, payload, st.head))
                    written.append((st.seq, payload))
                    env = Envelope.model_construct(
                        v=1, id=eid, seq=st.seq, ts=ts, site=self.site, body=job.body
                    )
                    results.append((job.fut, env, None))
                else:
                    # marks and retention see the appends before them in this batch
                    self._flush(conn, rows)
                    rows = []
                    if isinstance(job, _Mark):
                        n = self._mark(conn, job)
                        if job.fut is not None:
                            results.append((job.fut, n, None))
                    else:
                        results.append((job.fut, self._retain(conn, job), None))
            self._flush(conn, rows)
            appended = any(isinstance(j, _Append) for j in batch)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with _suppress_sqlite():
                conn.execute("ROLLBACK")
            st.seq, st.head, st.backlog = seq0, head0, backlog0
            err = map_error(exc, self.path, self._max_bytes)
            failed: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = [
                (j.fut, None, err) for j in batch if j.fut is not None
            ]
            # publishing marks only delete rows: retry them alone so a full disk
            # does not also stop the outbox from draining
            marks = [j for j in batch if isinstance(j, _Mark)]
            if marks and len(marks) < len(batch):
                retry = self._round(list(marks))
                failed = [r for r in failed if r[0] not in {m.fut for m in marks}]
                failed += retry.results
            n_appends = sum(1 for j in batch if isinstance(j, _Append))
            return Committed(failed, st.seq, st.backlog - backlog0, str(err), False, n_appends)
        except Exception as exc:  # a bug must not leave emitters waiting or the head astray
            with _suppress_sqlite():
                conn.execute("ROLLBACK")
            st.seq, st.head, st.backlog = seq0, head0, backlog0
            err = JournalError(f"journal {self.path}: internal error {exc!r}")
            n_appends = sum(1 for j in batch if isinstance(j, _Append))
            failed = [(j.fut, None, err) for j in batch if j.fut is not None]
            return Committed(failed, st.seq, 0, str(err), False, n_appends)
        return Committed(results, st.seq, st.backlog - backlog0, None, appended, rows=written)

    def _flush(self, conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        conn.executemany("INSERT INTO outbox VALUES (?)", [(r[0],) for r in rows])
        self.state.backlog += len(rows)

    def _mark(self, conn: sqlite3.Connection, job: _Mark) -> int:
        if job.up_to is not None:
            cur = conn.execute("DELETE FROM outbox WHERE seq <= ?", (job.up_to,))
        else:
            cur = conn.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in job.seqs])
        n = max(cur.rowcount, 0)
        self.state.backlog -= n
        return n

    def _retain(self, conn: sqlite3.Connection, job: _Retain) -> int:
        """Delete the oldest published rows before ``cutoff``; keep a checkpoint."""
        first_unpublished = conn.execute("SELECT min(seq) FROM outbox").fetchone()[0]
        first_recent = conn.execute(
            "SELECT min(seq) FROM events WHERE ts >= ?", (job.cutoff,)
        ).fetchone()[0]
        limit = self.state.seq
        for bound in (first_unpublished, first_recent):
            if bound is not None:
                limit = min(limit, int(bound) - 1)
        row = conn.execute(
            "SELECT seq, hash, ts FROM events WHERE seq <= ? ORDER BY seq DESC LIMIT 1", (limit,)
        ).fetchone()
        if row is None:
            return 0
        conn.execute(
            "INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?)",
            (row[0], row[1], row[2], job.created),
        )
        cur = conn.execute("DELETE FROM events WHERE seq <= ?", (row[0],))
        return max(cur.rowcount, 0)


class _suppress_sqlite:
    def __enter__(self) -> None:
        return None

    def __exit__(self, et: type[BaseException] | None, *_: object) -> bool:
        return et is not None and issubclass(et, sqlite3.Error)


def _map_any(exc: BaseException, path: Path, max_bytes: int | None) -> JournalError:
    if isinstance(exc, sqlite3.Error):
        return map_error(exc, path, max_bytes)
    return JournalError(f"journal {path}: {exc}")


def _set_result(fut: asyncio.Future[None], value: None) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exc(fut: asyncio.Future[None], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


# -- read side (runs on the reader thread) -----------------------------------------


def blob(value: object) -> bytes:
    """A BLOB column as bytes (an edited row may come back as TEXT)."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode()


def latest_checkpoint(conn: sqlite3.Connection) -> Checkpoint | None:
    row = conn.execute("SELECT seq, hash, ts FROM checkpoints ORDER BY seq DESC LIMIT 1").fetchone()
    return None if row is None else Checkpoint(int(row[0]), bytes(row[1]), str(row[2]))


def verify_chain(conn: sqlite3.Connection) -> BrokenLink | None:
    """Walk the chain from the genesis or the latest checkpoint; the first broken link."""
    cp = latest_checkpoint(conn)
    expected, prev = (cp.seq + 1, cp.hash) if cp is not None else (1, GENESIS)
    below = conn.execute("SELECT min(seq) FROM events WHERE seq < ?", (expected,)).fetchone()[0]
    if below is not None:
        return BrokenLink(int(below), f"row below the retention checkpoint at seq {expected - 1}")
    cur = conn.execute("SELECT seq, id, ts, type, payload, hash FROM events ORDER BY seq")
    for seq, eid, ts, typ, raw, h in _rows(cur):
        if seq != expected:
            gap = f"{expected}" if seq == expected + 1 else f"{expected}..{seq - 1}"
            return BrokenLink(expected, f"missing row(s) {gap} (deleted?)")
        payload = blob(raw)
        if not isinstance(h, bytes) or link(prev, payload) != h:
            return BrokenLink(
                seq, "its hash does not match its content and the previous link (altered)"
            )
        try:
            obj = json.loads(payload)
        except ValueError:
            return BrokenLink(seq, "its payload is not JSON (altered)")
        if (obj.get("seq"), obj.get("id"), obj.get("ts"), obj.get("type")) != (seq, eid, ts, typ):
            return BrokenLink(seq, "its columns differ from its payload (altered)")
        prev = h
        expected += 1
    return None


def _rows(cur: sqlite3.Cursor) -> Iterator[tuple[int, str, str, str, bytes, bytes]]:
    while True:
        chunk = cur.fetchmany(1000)
        if not chunk:
            return
        yield from chunk
