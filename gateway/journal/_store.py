"""SQLite access for the journal: schema, the write side (:class:`Store`, group commit),
read queries.

Nothing here runs on the event loop. :class:`Store` runs in the journal's writer
process (``_child``): it owns the only write connection and applies every job queued
since its last round in one transaction. The read queries run on the journal's reader
thread. Standard library only (the writer process starts without pydantic).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from protocols.errors import JournalCorrupt, JournalError, JournalForeign, JournalFull

from ._chain import GENESIS, link, utc_ms, uuid7, wire_payload
from ._head import Head, HeadFile, head_path

if TYPE_CHECKING:
    from ._recover import Plan

__all__ = [
    "ERRORS",
    "BrokenLink",
    "Checkpoint",
    "Checkpointer",
    "Job",
    "Outcome",
    "Restart",
    "Round",
    "Store",
    "Walk",
    "blob",
    "connect",
    "map_error",
    "restarts",
    "walk_chain",
]

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
-- the start's reads by type (the last revocation list, roster, alarm: gateway.app's
-- state_history) without a scan of the whole journal; built once (~0.1 s per 200,000
-- rows) at the first start that finds it missing (bench/journal_start.py)
CREATE INDEX IF NOT EXISTS events_type ON events (type, seq);
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
            f"journal {path} is damaged ({text}); new events wait in its fallback file and "
            "doors still open; restart lockgw: it moves the file aside (kept for the audit) "
            "and starts a new journal linked to its last verifiable row"
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
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():  # SQLite gives the -wal and -shm files the database file's mode
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
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


#: what the journal asks of the writer, one tuple per job (plain data: it crosses a pipe)
#: ``("a", type, door, body_json, ns, id)`` append an event stamped ``ns`` (Unix ns) with
#: its id (the gateway makes both: the phone hears the id before the commit);
#: ``("R", [(type, door, body_json, ns, id), ...])`` append events from the journal's
#: fallback in that order, skipping any already committed;
#: ``("m", up_to, seqs)`` take events off the outbox; ``("r", cutoff, created)`` retention
Job = tuple[Any, ...]
#: a job's outcome: ``(True, value)`` or ``(False, (error class name, message))``;
#: an append's value is ``(id, seq, ts)``, a replay's a list of them, a mark's or
#: retention's a row count
Outcome = tuple[bool, Any]

ERRORS: dict[str, type[JournalError]] = {
    cls.__name__: cls for cls in (JournalError, JournalFull, JournalCorrupt, JournalForeign)
}


@dataclass(slots=True)
class Round:
    """What one writer round (one transaction, group commit) tells the journal."""

    results: list[Outcome]
    last_seq: int
    backlog_delta: int
    error: str | None
    appended: bool
    failed_appends: int = 0
    #: (seq, wire payload) of every event this round committed, in order: the journal
    #: keeps the newest in memory so the publisher need not read back what was written
    rows: list[tuple[int, bytes]] = field(default_factory=list)
    #: how long the round took in the writer, ms (the commit's fsync, mostly)
    took_ms: float = 0.0


def _failed(err: JournalError) -> Outcome:
    return (False, (type(err).__name__, str(err)))


class Store:
    """The journal's only write connection: every job queued since the last round in one
    transaction (group commit). Synchronous and single-threaded; the writer process
    (``_child``) runs it, tests may call it directly."""

    MAX_BATCH = 2000
    #: SQLite's own checkpoint only past this many WAL pages (8 MB at 4 KiB pages)
    AUTOCHECKPOINT_PAGES = 2000

    def __init__(
        self, path: Path, site: str, *, max_bytes: int | None, check: str = "full"
    ) -> None:
        self.path = path
        #: the check at open (``_recover``): ``full``, or ``tail`` (the full one when the
        #: head file cannot vouch for the journal); :attr:`checked` says which ran
        self.check = check
        self.checked = check
        self.site = site
        self._site_json = json.dumps(site)
        self._max_bytes = max_bytes
        self._conn: sqlite3.Connection | None = None
        self._durable = True  # connect() sets synchronous=FULL
        self.seq = 0
        self.head = GENESIS
        self.backlog = 0
        self._head_file = HeadFile(head_path(path))
        #: the restart made at open (``_recover``): the event's body and seq, or None
        self.restart: dict[str, Any] | None = None

    def open(self) -> None:
        """Open (creating when new) and read where the chain stands. Raises JournalError."""
        try:
            self._open()
        except JournalError:
            raise
        except sqlite3.Error as exc:
            raise map_error(exc, self.path, self._max_bytes) from exc
        except OSError as exc:
            raise JournalError(f"journal {self.path}: {exc}") from exc

    def _open(self) -> None:
        from ._recover import examine_checked  # it walks the chain with the read side below

        plan, self.checked = examine_checked(
            self.path, self.site, head_path(self.path), full=self.check != "tail"
        )
        conn = connect(self.path, read_only=False, max_bytes=self._max_bytes)
        self._conn = conn
        # the WAL is copied back into the database by a Checkpointer between rounds,
        # not by the commit that happens to cross SQLite's 1000-page default (a 15-50 ms
        # round at a door); this is the fallback should the checkpointer fall behind
        conn.execute(f"PRAGMA wal_autocheckpoint = {self.AUTOCHECKPOINT_PAGES}")
        conn.executescript(_SCHEMA)
        row = conn.execute("SELECT value FROM meta WHERE key = 'site'").fetchone()
        if row is None:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO meta VALUES ('site', ?), ('schema', ?)", (self.site, SCHEMA_VERSION)
            )
            conn.execute("COMMIT")
        elif row[0] != self.site:
            raise JournalForeign(
                f"journal {self.path} belongs to site {row[0]!r}, not {self.site!r}; "
                "point data_dir at this site's own directory"
            )
        last = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        if last is None:
            cp = conn.execute(
                "SELECT seq, hash FROM checkpoints ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            last = cp if cp is not None else (0, GENESIS)
        self.seq, self.head = int(last[0]), bytes(last[1])
        self.backlog = int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])
        if plan is not None:
            self._restart(conn, plan)
        self.write_head()

    def _restart(self, conn: sqlite3.Connection, plan: Plan) -> None:
        """Record a restart (``_recover``): in one transaction, the ``restarts`` meta and
        the ``journal.damaged`` / ``journal.lost`` row at ``plan.seq + 1``, linked to
        ``plan.link_hash``."""
        from ._recover import restart_meta

        seq0, head0 = self.seq, self.head
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'restarts'").fetchone()
            conn.execute(
                "INSERT OR REPLACE INTO meta VALUES ('restarts', ?)",
                (restart_meta(row[0] if row else None, plan),),
            )
            self.seq, self.head = plan.seq, plan.link_hash
            rows: list[tuple[int, str, str, str, str | None, bytes, bytes]] = []
            body = json.dumps(plan.body(), separators=(",", ":"))
            self._append((plan.kind, None, body, time.time_ns()), rows, [])
            self._flush(conn, rows)
            conn.execute("COMMIT")
        except BaseException:
            with _suppress_sqlite():
                conn.execute("ROLLBACK")
            self.seq, self.head = seq0, head0
            raise
        self.restart = {**plan.body(), "seq": self.seq}

    def write_head(self) -> None:
        """Where the chain stands, to the head file (``_head``); after each round."""
        self._head_file.write(Head(self.site, self.seq, self.head.hex()))

    def close(self) -> None:
        self._head_file.close()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def round(self, batch: Sequence[Job]) -> Round:
        """Apply ``batch`` in one transaction; on failure none of it, and the chain's head
        stays where it was."""
        conn = self._conn
        assert conn is not None, "Store.open() first"
        seq0, head0, backlog0 = self.seq, self.head, self.backlog
        results: list[Outcome] = []
        n_appends = sum(1 for j in batch if j[0] == "a")
        n_records = n_appends + sum(len(j[1]) for j in batch if j[0] == "R")
        try:
            self._sync(any(j[0] != "m" for j in batch))
            conn.execute("BEGIN IMMEDIATE")
            rows: list[tuple[int, str, str, str, str | None, bytes, bytes]] = []
            written: list[tuple[int, bytes]] = []
            for job in batch:
                if job[0] == "a":
                    results.append((True, self._append(job[1:], rows, written)))
                elif job[0] == "R":
                    # events from the fallback, in their order; one that an earlier
                    # replay (or a writer that died before answering) already committed
                    # is not written twice
                    self._flush(conn, rows)
                    rows = []
                    done = [self._existing(conn, ev) or self._append(ev, rows, written)
                            for ev in job[1]]  # fmt: skip
                    results.append((True, done))
                else:
                    # marks and retention see the appends before them in this batch
                    self._flush(conn, rows)
                    rows = []
                    if job[0] == "m":
                        results.append((True, self._mark(conn, job[1], job[2])))
                    else:
                        results.append((True, self._retain(conn, job[1], job[2])))
            self._flush(conn, rows)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with _suppress_sqlite():
                conn.execute("ROLLBACK")
            self.seq, self.head, self.backlog = seq0, head0, backlog0
            err = map_error(exc, self.path, self._max_bytes)
            outcomes = [_failed(err)] * len(batch)
            # publishing marks only delete rows: retry them alone so a full disk
            # does not also stop the outbox from draining
            marks = [i for i, j in enumerate(batch) if j[0] == "m"]
            if marks and len(marks) < len(batch):
                retry = self.round([batch[i] for i in marks])
                for i, outcome in zip(marks, retry.results, strict=True):
                    outcomes[i] = outcome
            return Round(outcomes, self.seq, self.backlog - backlog0, str(err), False, n_appends)
        except Exception as exc:  # a bug must not leave emitters waiting or the head astray
            with _suppress_sqlite():
                conn.execute("ROLLBACK")
            self.seq, self.head, self.backlog = seq0, head0, backlog0
            err = JournalError(f"journal {self.path}: internal error {exc!r}")
            return Round([_failed(err)] * len(batch), self.seq, 0, str(err), False, n_appends)
        return Round(
            results, self.seq, self.backlog - backlog0, None, n_records > 0, rows=written
        )

    def _append(
        self,
        ev: Sequence[Any],
        rows: list[tuple[int, str, str, str, str | None, bytes, bytes]],
        written: list[tuple[int, bytes]],
    ) -> tuple[str, int, str]:
        """Give ``(type, door, body_json, ns[, id])`` the next seq and link; (id, seq, ts)."""
        typ, door, body_json, ns = ev[0], ev[1], ev[2], ev[3]
        eid = ev[4] if len(ev) > 4 else uuid7(ns // 1_000_000)
        self.seq += 1
        ts = utc_ms(ns)
        payload = wire_payload(eid, self.seq, ts, self._site_json, body_json)
        self.head = link(self.head, payload)
        rows.append((self.seq, eid, ts, typ, door, payload, self.head))
        written.append((self.seq, payload))
        return (eid, self.seq, ts)

    @staticmethod
    def _existing(conn: sqlite3.Connection, ev: Sequence[Any]) -> tuple[str, int, str] | None:
        """(id, seq, ts) of the event already in the journal with this id and time."""
        ts = utc_ms(ev[3])
        row = conn.execute("SELECT seq FROM events WHERE ts = ? AND id = ?", (ts, ev[4])).fetchone()
        return None if row is None else (ev[4], int(row[0]), ts)

    def _sync(self, durable: bool) -> None:
        """``synchronous=FULL`` (fsync at commit) for a round that records something;
        ``NORMAL`` for one that only takes published events off the outbox. A mark lost
        to a power cut only means the event is published again (consumers deduplicate
        by ``id``, CONTRACT §4), and the next durable commit's fsync carries it anyway:
        WAL frames reach the disk in order. Halves the fsyncs of a busy door."""
        if durable != self._durable:
            assert self._conn is not None
            self._conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            self._durable = durable

    def _flush(self, conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        conn.executemany("INSERT INTO outbox VALUES (?)", [(r[0],) for r in rows])
        self.backlog += len(rows)

    def _mark(self, conn: sqlite3.Connection, up_to: int | None, seqs: Sequence[int]) -> int:
        if up_to is not None:
            cur = conn.execute("DELETE FROM outbox WHERE seq <= ?", (up_to,))
        else:
            cur = conn.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])
        n = max(cur.rowcount, 0)
        self.backlog -= n
        return n

    def _retain(self, conn: sqlite3.Connection, cutoff: str, created: str) -> int:
        """Delete the oldest published rows before ``cutoff``; keep a checkpoint."""
        first_unpublished = conn.execute("SELECT min(seq) FROM outbox").fetchone()[0]
        first_recent = conn.execute(
            "SELECT min(seq) FROM events WHERE ts >= ?", (cutoff,)
        ).fetchone()[0]
        limit = self.seq
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
            (row[0], row[1], row[2], created),
        )
        cur = conn.execute("DELETE FROM events WHERE seq <= ?", (row[0],))
        return max(cur.rowcount, 0)


class Checkpointer:
    """Copies the WAL back into the database on a thread of its own, with a connection
    of its own, at most every ``interval`` seconds and only after a round that wrote
    (:meth:`kick`). A PASSIVE checkpoint never blocks the writer: commits go on
    appending to the WAL while it runs, and the writer starts the WAL over once a
    checkpoint has caught up. Without this, SQLite checkpoints inside whichever commit
    crosses its threshold, and the carer at the door waits for it.

    A failed checkpoint is not an error of the journal (the events are in the WAL,
    durable); it is tried again after the next round."""

    def __init__(self, path: Path, *, interval: float = 0.25, nice: int | None = None) -> None:
        self.path = path
        self.interval = interval
        #: the thread's own nice value (the writer's priority is for commits, not this)
        self.nice = nice
        self.runs = 0
        self.last_error: str | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="journal-checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def kick(self) -> None:
        """A round wrote something: checkpoint soon."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the checkpoint in progress, if any (the last connection to close,
        the writer's, checkpoints what is left)."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        # back to the process's first priority, for this thread only (Linux: nice is per
        # thread); always allowed, and only asked for when it changes something (a
        # system-call filter may refuse setpriority outright)
        if self.nice is not None and self.nice > os.getpriority(os.PRIO_PROCESS, 0):
            os.setpriority(os.PRIO_PROCESS, 0, self.nice)
        try:
            while True:
                self._wake.wait()
                if self._stopping.is_set():
                    return
                self._wake.clear()
                if conn is None:
                    conn = sqlite3.connect(self.path, isolation_level=None)
                    conn.execute("PRAGMA busy_timeout = 0")
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.runs += 1
                    self.last_error = None
                except sqlite3.Error as exc:
                    self.last_error = str(exc)
                # rounds in the meantime set _wake again: at most one checkpoint per interval
                if self._stopping.wait(self.interval):
                    return
        except sqlite3.Error as exc:  # could not even open: SQLite's own checkpoint remains
            self.last_error = str(exc)
        finally:
            if conn is not None:
                conn.close()


class _suppress_sqlite:
    def __enter__(self) -> None:
        return None

    def __exit__(self, et: type[BaseException] | None, *_: object) -> bool:
        return et is not None and issubclass(et, sqlite3.Error)


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


class Restart(NamedTuple):
    """Where the journal was started again after damage or loss (``_recover``): the row
    at ``seq`` (a ``journal.damaged`` / ``journal.lost`` event) links to ``link_hash``,
    the link of ``link_seq`` — the last row that verified in the journal before it (or
    what the head file said, ``link_from``), not to the row before it in this file."""

    seq: int
    link_seq: int
    link_hash: str
    kind: str
    link_from: str
    kept_as: str | None

    def describe(self) -> str:
        kept = f" (the old file is kept as {self.kept_as})" if self.kept_as else ""
        lost = (
            f"; seq {self.link_seq + 1}..{self.seq - 1} are not in this journal"
            if self.seq - 1 > self.link_seq
            else ""
        )
        return (
            f"restarted at seq {self.seq} ({self.kind}){kept}: it links to seq "
            f"{self.link_seq} (hash {self.link_hash[:16]}..., from the {self.link_from}){lost}"
        )


def restarts(conn: sqlite3.Connection) -> list[Restart]:
    """The journal's documented restarts, oldest first."""
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'restarts'").fetchone()
    except sqlite3.OperationalError:
        return []
    if row is None:
        return []
    try:
        return [
            Restart(
                int(r["seq"]),
                int(r["link_seq"]),
                str(r["link_hash"]),
                str(r["kind"]),
                str(r.get("link_from", "journal")),
                r.get("kept_as"),
            )
            for r in json.loads(row[0])
        ]
    except (ValueError, KeyError, TypeError):
        return []


class Walk(NamedTuple):
    """What walking the chain found: the first broken link (None: intact), the last row
    that verified (``seq``, link) — the checkpoint's or the genesis when none did —, and
    the highest seq seen."""

    broken: BrokenLink | None
    last_seq: int
    last_hash: bytes
    max_seq: int


def verify_chain(conn: sqlite3.Connection) -> BrokenLink | None:
    """Walk the chain from the genesis or the latest checkpoint; the first broken link."""
    return walk_chain(conn).broken


def walk_chain(conn: sqlite3.Connection, after: tuple[int, bytes] | None = None) -> Walk:
    """Walk the chain from the genesis or the latest checkpoint, across documented
    restarts (:class:`Restart`). A read error of SQLite (a damaged page) ends the walk
    as a broken link.

    ``after``: ``(seq, link)`` of a row taken as verified (``_recover``'s tail check):
    walk only the rows after it, starting from that link."""
    cp = latest_checkpoint(conn)
    expected, prev = (cp.seq + 1, cp.hash) if cp is not None else (1, GENESIS)
    last_seq, seen = expected - 1, cp is not None
    at = {r.seq: r for r in restarts(conn)}

    def broken(seq: int, problem: str) -> Walk:
        return Walk(BrokenLink(seq, problem), last_seq, prev, max(seq, last_seq))

    below = conn.execute("SELECT min(seq) FROM events WHERE seq < ?", (expected,)).fetchone()[0]
    if below is not None:
        return broken(int(below), f"row below the retention checkpoint at seq {expected - 1}")
    if after is not None and after[0] >= expected - 1:
        expected, prev, last_seq, seen = after[0] + 1, after[1], after[0], True
    cur = conn.execute(
        "SELECT seq, id, ts, type, door, payload, hash FROM events WHERE seq >= ? ORDER BY seq",
        (expected,),
    )
    try:
        for seq, eid, ts, typ, door, raw, h in _rows(cur):
            r = at.get(seq)
            if r is not None and seq >= expected:
                if seen and (r.link_seq != expected - 1 or r.link_hash != prev.hex()):
                    return broken(seq, "a restart that does not link to the row before it")
                prev, expected = bytes.fromhex(r.link_hash), seq
            if seq != expected:
                gap = f"{expected}" if seq == expected + 1 else f"{expected}..{seq - 1}"
                return broken(expected, f"missing row(s) {gap} (deleted?)")
            payload = blob(raw)
            if not isinstance(h, bytes) or link(prev, payload) != h:
                return broken(
                    seq, "its hash does not match its content and the previous link (altered)"
                )
            try:
                obj = json.loads(payload)
            except ValueError:
                return broken(seq, "its payload is not JSON (altered)")
            # every column a reader filters on (audit show --since/--door, the resident's
            # page, retention) is a copy of a field of the chained payload: one that differs
            # was edited, and a filter on it would show or hide the wrong rows
            columns = {"seq": seq, "id": eid, "ts": ts, "type": typ, "door": door}
            altered = [name for name, value in columns.items() if obj.get(name) != value]
            if altered:
                return broken(
                    seq,
                    f"its {', '.join(altered)} column differs from its chained payload (altered)",
                )
            prev, last_seq, seen = h, seq, True
            expected += 1
    except sqlite3.DatabaseError as exc:
        if isinstance(exc, sqlite3.OperationalError) and "no such table" in str(exc):
            raise
        return broken(expected, f"cannot be read ({exc})")
    return Walk(None, last_seq, prev, last_seq)


def _rows(cur: sqlite3.Cursor) -> Iterator[tuple[int, str, str, str, str | None, bytes, bytes]]:
    while True:
        chunk = cur.fetchmany(1000)
        if not chunk:
            return
        yield from chunk
