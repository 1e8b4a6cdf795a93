"""The journal: one append-only SQLite (WAL) table for every event, with its outbox.

``async with Journal(path, site, retention_days=365) as j: env = await j.emit(body)``.

One transaction per batch of events assigns each its gap-free ``seq`` (surviving
restarts), links it into a SHA-256 hash chain and marks it unpublished (the
outbox). ``emit`` returns only once that transaction is committed with
``synchronous=FULL``; many concurrent emits share one commit (group commit).
SQLite never runs on the event loop: the journal's writer is a process of its own
(``_child``, so a commit never waits for the loop to release the GIL) and reads run
on a reader thread.

Whatever SQLite does, ``emit`` records: an event the journal cannot commit (disk or
``max_bytes`` full, a damaged file, the writer process gone) goes, with every event
after it, to the fallback file beside the journal (``_fallback``, ``_spill``) and is
replayed into the journal, in order and with the id and time it was given, when the
journal can write again. Its envelope then has ``seq`` 0 (the seq comes at replay).
``recording`` says which of the two is taking events.

Before the writer takes anything it checks the journal (``_recover``): in full (every
row's link, SQLite's ``quick_check``; the default), or, with ``startup_check="tail"``
(``lockgw run``), only what the head file does not vouch for — a cost that does not grow
with the journal's age. The full check then runs once the gateway is ready
(:meth:`Journal.start_background_check`), in a process of its own; a damage it finds is
handled as one found while running: events wait in the fallback, a new writer makes the
full check, moves the file aside and starts a new journal with ``journal.damaged``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

import structlog
from pydantic import TypeAdapter

from protocols.errors import JournalError, JournalForeign
from protocols.events import Envelope, EventBody, JournalRecoveredEvent

from ._chain import GENESIS, utc_ms, uuid7
from ._fallback import Fallback, Recording
from ._spill import Held, spill_path
from ._store import (
    ERRORS,
    BrokenLink,
    Checkpoint,
    Restart,
    Round,
    blob,
    connect,
    latest_checkpoint,
    map_error,
    restarts,
    verify_chain,
)
from ._writer import _ROOT, Pending, SyscallRefused, WriterProcess

__all__ = ["Journal", "envelope_from_wire", "journal_path"]

log = structlog.get_logger("lockgw.journal")

T = TypeVar("T")

#: how often retention runs while the journal is open, seconds
RETENTION_INTERVAL = 3600.0
#: at most this many committed, unpublished events kept in memory for the publisher
TAIL_MAX = 4096
#: the longest wait between attempts to restart a writer process that died, seconds
RESTART_MAX_DELAY = 30.0
#: a writer round (one commit) at least this long is logged (``journal.slow_round``), ms:
#: every unlock waiting at that moment waited for it (bench/unlock_latency.py counts them)
SLOW_ROUND_MS = 10.0
#: when the check after start finds the journal damaged: how long the events already
#: committed to it get to reach the broker before its writer is restarted, seconds
DAMAGE_DRAIN_WAIT = 10.0

_BODY: TypeAdapter[EventBody] = TypeAdapter(EventBody)


def envelope_from_wire(data: dict[str, Any] | bytes | str) -> Envelope:
    """Parse a published/journaled event back into an :class:`Envelope`."""
    obj: dict[str, Any] = json.loads(data) if isinstance(data, bytes | str) else dict(data)
    head = {k: obj.pop(k) for k in ("v", "id", "seq", "ts", "site") if k in obj}
    return Envelope(**head, body=_BODY.validate_python(obj))


def journal_path(data_dir: Path | str) -> Path:
    """Where a site's journal lives inside its ``data_dir``."""
    return Path(data_dir) / "journal.sqlite3"


def _ts(value: datetime | str) -> str:
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        raise ValueError("give a time zone aware datetime")
    return utc_ms(int(value.timestamp() * 1_000_000_000))


class Journal:
    """The site's journal and outbox; see the module docstring."""

    def __init__(
        self,
        path: Path,
        site: str,
        *,
        retention_days: int,
        max_bytes: int | None = None,
        read_only: bool = False,
        writer_nice: int = 0,
        startup_check: Literal["full", "tail"] = "full",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if retention_days < 1:
            raise ValueError("retention_days must be at least 1")
        self.path = Path(path)
        self.site = site
        self.retention_days = retention_days
        self.max_bytes = max_bytes
        self.read_only = read_only
        #: scheduling priority (nice value) the writer process asks for; 0 = as the daemon
        self.writer_nice = writer_nice
        #: the check a starting writer makes (``_recover``): ``full``, or ``tail`` with the
        #: full one after start (:meth:`start_background_check`)
        self.startup_check = startup_check
        #: damage suspected (a corrupt round, the check after start): the next writer
        #: makes the full check whatever ``startup_check`` says
        self._full_next = False
        #: what the check after start found, while the writer is being replaced
        self._suspect: str | None = None
        self._check_task: asyncio.Task[str | None] | None = None
        self._clock = clock
        self._writer: WriterProcess | None = None
        self._restart_task: asyncio.Task[None] | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._last_seq = 0
        self._backlog = 0
        self._error: str | None = None
        self._failures = 0
        self._listeners: list[Callable[[], None]] = []
        self._marked = asyncio.Event()
        self._retention_task: asyncio.Task[None] | None = None
        self._open = False
        self._fallback: Fallback | None = None
        self._restarts: list[dict[str, Any]] = []
        self._closing_writer: asyncio.Task[None] | None = None
        self._recording_listeners: list[Callable[[], None]] = []
        #: the newest committed, not yet published events (seq, wire JSON), contiguous:
        #: the publisher reads them from here instead of reading back what was just
        #: written (each read was a hop to the reader thread; bench/event_pipeline.py)
        self._tail: deque[tuple[int, bytes]] = deque(maxlen=TAIL_MAX)
        self._published_upto = 0

    # -- lifecycle ---------------------------------------------------------------
    async def __aenter__(self) -> Journal:
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="journal-read")
        try:
            if self.read_only:
                self._last_seq, self._backlog = await self._read(self._counts)
            else:
                self._fallback = Fallback(
                    spill_path(self.path),
                    replay=self._replay,
                    can_replay=lambda: (
                        self._writer is not None and self._writer.alive and self._suspect is None
                    ),
                    recovered=self._recovered,
                    changed=self._recording_changed,
                )
                await self._fallback.open()
                try:
                    writer, (seq, backlog) = await self._start_writer()
                except JournalForeign:
                    await self._fallback.close()
                    raise
                except JournalError as exc:
                    # care first: the daemon keeps running (doors keep opening), events
                    # go to the fallback, and the writer is tried again and again
                    self._error = str(exc)
                    log.error("journal.cannot_open", error=self._error)
                    self._restart_task = asyncio.create_task(self._restart_writer())
                else:
                    self._writer = writer
                    self._last_seq, self._backlog = seq, backlog
                    self._restarted(writer)
                self._retention_task = asyncio.create_task(self._retention_loop())
        except BaseException:
            await self._close_reader()
            raise
        self._open = True
        if not self.read_only:  # the audit CLI's output stays clean
            log.info(
                "journal.open",
                path=str(self.path),
                last_seq=self._last_seq,
                backlog=self._backlog,
                max_bytes=self.max_bytes,
                writer_nice=self._writer.nice if self._writer is not None else None,
                checked=self.checked,
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._open = False
        for task in (self._check_task, self._retention_task, self._restart_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._writer is not None:
            await self._writer.close()
            self._writer = None
        if self._closing_writer is not None:
            await self._closing_writer
        if self._fallback is not None:  # what went there while closing is written now
            await self._fallback.close()
        await self._close_reader()
        self._announce()
        self._marked.set()

    async def _close_reader(self) -> None:
        if self._reader is None:
            return

        def close_all() -> None:
            for conn in self._conns:
                conn.close()
            self._conns.clear()

        await asyncio.get_running_loop().run_in_executor(self._reader, close_all)
        self._reader.shutdown(wait=True)
        self._reader = None

    # -- state ---------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        """Between ``__aenter__`` and ``__aexit__``."""
        return self._open

    @property
    def last_seq(self) -> int:
        """The highest ``seq`` committed (0 for an empty journal)."""
        return self._last_seq

    @property
    def checked(self) -> str | None:
        """The check the running writer made before it opened the journal (``full`` or
        ``tail``, ``_recover``); None without a writer."""
        return None if self._writer is None else self._writer.checked

    @property
    def error(self) -> str | None:
        """Why the journal cannot record events right now (None when it can)."""
        return self._error

    @property
    def failures(self) -> int:
        """How many events the journal could not take at once since it was opened (each
        went to the fallback)."""
        return self._failures

    @property
    def recording(self) -> Recording:
        """``ok``: events go to the journal; ``fallback``: they wait in the fallback file
        beside it; ``unrecorded``: that cannot be written either (kept in memory only)."""
        return "ok" if self._fallback is None else self._fallback.recording

    @property
    def held(self) -> int:
        """Events waiting in the fallback for the journal."""
        return 0 if self._fallback is None else len(self._fallback.held)

    @property
    def not_durable(self) -> int:
        """Of those, the events kept in memory only (the fallback file cannot be written)."""
        return 0 if self._fallback is None else self._fallback.not_durable

    @property
    def fallback_problem(self) -> str | None:
        """Why events wait in the fallback (None when none do)."""
        return None if self._fallback is None or not self._fallback.held else self._fallback.problem

    def on_recording_change(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` on the loop when :attr:`recording` changes."""
        self._recording_listeners.append(fn)

    def _recording_changed(self) -> None:
        log.info("journal.recording", state=self.recording, held=self.held)
        for fn in list(self._recording_listeners):
            fn()

    def backlog(self) -> int:
        """Events committed but not yet acknowledged by the broker."""
        return self._backlog

    # -- the writer process ------------------------------------------------------------
    async def _start_writer(self) -> tuple[WriterProcess, tuple[int, int]]:
        try:
            writer, state = await self._spawn_writer()
        except SyscallRefused as exc:
            if self.writer_nice == 0:
                raise
            # setpriority refused by a unit older than journal.writer_nice: the door
            # matters more than the priority
            log.warning("journal.writer_priority", nice=0, detail=f"{exc}; started at normal priority")
            self.writer_nice = 0
            return await self._spawn_writer()
        if writer.nice_refused and self._writer is None and not self._open:
            # said once, at start: the door works, a busy one just waits longer for commits
            log.warning("journal.writer_priority", nice=writer.nice, detail=writer.nice_refused)
        return writer, state

    async def _spawn_writer(self) -> tuple[WriterProcess, tuple[int, int]]:
        # ``check`` only when it is not the default: the start's signature stays as it was
        tail = {} if self.startup_check == "full" or self._full_next else {"check": "tail"}
        started = await WriterProcess.start(
            self.path,
            self.site,
            self.max_bytes,
            self._delivered,
            self._writer_lost,
            nice=self.writer_nice,
            **tail,
        )
        if started[0].checked == "full":
            self._full_next = False
        return started

    def _writer_lost(self, writer: WriterProcess, err: JournalError, pending: list[Pending]) -> None:
        """On the loop: the writer process stopped (killed, out of memory, or closed).
        What it had not answered may or may not have been committed: appends go to the
        fallback, in order (a replay skips what was committed); start another writer."""
        current = writer is self._writer and self._open
        if current:
            self._writer = None
            self._error = f"journal {self.path}: {err}; restarting it"
            log.error("journal.writer_lost", error=str(err), exit_code=writer.proc.returncode)
        unconfirmed = JournalError(f"{err}, before confirming this (it may have been recorded)")
        for fut, what in pending:
            if isinstance(what, tuple) and isinstance(what[0], Held):
                self._hold(what[0], what[1], fut, str(unconfirmed))
            elif not fut.done():
                fut.set_exception(unconfirmed)
        if current:
            self._restart_task = asyncio.create_task(self._restart_writer())

    async def _restart_writer(self) -> None:
        delay = 0.1
        while self._open:
            try:
                writer, (seq, backlog) = await self._start_writer()
            except JournalError as exc:
                self._error = str(exc)
                log.error("journal.writer_restart_failed", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESTART_MAX_DELAY)
                continue
            if not self._open:
                await writer.close()
                return
            self._writer = writer
            self._error = None
            self._suspect = None
            self._last_seq, self._backlog = seq, backlog
            self._restarted(writer)
            self._tail.clear()  # what the old writer last committed may not have reached us
            log.info("journal.writer_restarted", last_seq=seq, backlog=backlog)
            self._announce()
            if self._fallback is not None:
                self._fallback.kick()
            return

    def _restarted(self, writer: WriterProcess) -> None:
        """The writer found the journal damaged or lost and started it again (``_recover``)."""
        r = writer.restart
        if r is None:
            return
        self._restarts.append(r)
        if self._reader is not None:  # reads go to the new file from now on
            self._reader.submit(self._drop_reader_conns)
        log.error(
            r["type"],
            problem=r["problem"],
            kept_as=r["kept_as"],
            seq=r["seq"],
            link_seq=r["link_seq"],
        )
        for fn in list(self._recording_listeners):
            fn()

    def _drop_reader_conns(self) -> None:
        """On the reader thread: close its connection (it may hold the moved-aside file)."""
        for conn in self._conns:
            conn.close()
        self._conns.clear()
        self._local.conn = None

    # -- the full check after start ------------------------------------------------------
    def start_background_check(self) -> asyncio.Task[str | None] | None:
        """Once the gateway is ready: the full check (:meth:`check_in_background`) when
        the writer started on the tail check alone; the task, or None when there is
        nothing to check (the full check ran at start, or it already runs)."""
        writer = self._writer
        if self.read_only or writer is None or writer.checked != "tail" or self._check_task:
            return None
        self._check_task = asyncio.create_task(self._check_safely())
        return self._check_task

    async def _check_safely(self) -> str | None:
        try:
            return await self.check_in_background()
        except Exception as exc:  # a bug here must not reach the journal's close
            log.error("journal.check_failed", error=repr(exc))
            return None

    async def check_in_background(self) -> str | None:
        """The full check of ``_recover`` (every row's link, ``quick_check``) in a process
        of its own at a lower priority, beside the running writer; what it found (None:
        the journal is whole). A damage is handled as one found while running, and said
        as loudly as one found at start: ``journal.damage_found`` in the log, health says
        the journal cannot write (events wait in the fallback), the events already
        committed get :data:`DAMAGE_DRAIN_WAIT` seconds to reach the broker, then the
        writer is replaced by one that makes the full check, moves the file aside and
        starts a new journal with ``journal.damaged`` (on the stream, in health)."""
        writer = self._writer
        t0 = time.monotonic()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH")) if p)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway.journal._recover", str(self.path), self.site,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env,
            )  # fmt: skip
        except OSError as exc:
            log.error("journal.check_failed", error=f"cannot start the check: {exc}")
            return None
        try:
            out, _ = await proc.communicate()
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        try:
            result = json.loads(out)
            problem: str | None = result["problem"]
        except (ValueError, KeyError, TypeError):
            log.error("journal.check_failed", exit_code=proc.returncode,
                      error="the full check after start ended without a result")  # fmt: skip
            return None
        took = round(time.monotonic() - t0, 2)
        if problem is None:
            log.info("journal.checked", last_seq=result.get("last_seq"), seconds=took)
            return None
        problem = f"journal {self.path}: {problem}"
        if not self._open or writer is None or self._writer is not writer:
            # the writer was replaced meanwhile (its start made the full check, or will)
            log.warning("journal.check_outdated", problem=problem)
            return problem
        log.error("journal.damage_found", problem=problem, seconds=took,
                  detail="found by the full check after start; a new journal is started, "
                  "linked to the last row that verifies")  # fmt: skip
        self._full_next = True
        self._suspect = problem
        self._error = (
            f"{problem} (found by the check after start); events wait in its fallback file "
            "until a new journal is started"
        )
        for fn in list(self._recording_listeners):
            fn()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DAMAGE_DRAIN_WAIT):
                await self.wait_drained()
        if self._open and self._writer is writer and writer.alive:
            self._closing_writer = asyncio.create_task(writer.close())
        return problem

    @property
    def restarts(self) -> list[dict[str, Any]]:
        """The journal's restarts since it was opened (``journal.damaged`` /
        ``journal.lost``: the event's body and seq), for health."""
        return list(self._restarts)

    # -- writing -----------------------------------------------------------------------
    def _require_writer(self) -> WriterProcess:
        if self._open and not self.read_only and (self._writer is None or not self._writer.alive):
            raise JournalError(self._error or f"journal {self.path}: its writer is not running")
        if self._writer is None or not self._open:
            raise JournalError(
                f"journal {self.path} is " + ("read-only" if self.read_only else "not open")
            )
        return self._writer

    async def emit(self, body: EventBody) -> Envelope:
        """Durably record ``body``; return it with its ``id``, ``seq`` and ``ts``.

        When the journal cannot take it, it goes to the fallback file (see the module
        docstring) and the envelope's ``seq`` is 0; its ``id`` and ``ts`` are those it
        will be published with. Raises :class:`JournalError` only when the journal is
        not open for writing.
        """
        fallback = self._fallback
        if fallback is None or not self._open:
            raise JournalError(
                f"journal {self.path} is " + ("read-only" if self.read_only else "not open")
            )
        ns = int(self._clock() * 1_000_000_000)
        h = Held(uuid7(ns // 1_000_000), ns, body.type, getattr(body, "door", None),
                 body.model_dump_json())  # fmt: skip
        fut: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        writer = self._writer
        if fallback.active or writer is None or not writer.alive or self._suspect is not None:
            self._hold(h, body, fut, self._error or f"journal {self.path}: its writer is not running")
        else:
            writer.submit(("a", *h.job()), fut, (h, body))
        return await fut

    def _hold(self, h: Held, body: EventBody, fut: asyncio.Future[Envelope], problem: str) -> None:
        """``h`` to the fallback; ``fut`` hears its envelope (seq 0) once it is kept."""
        assert self._fallback is not None
        self._failures += 1

        def kept(h: Held) -> None:
            if not fut.done():
                fut.set_result(self._envelope(h, body, 0))

        self._fallback.hold(h, kept, problem)

    def _envelope(self, h: Held, body: EventBody, seq: int) -> Envelope:
        return Envelope.model_construct(v=1, id=h.id, seq=seq, ts=utc_ms(h.ns), site=self.site,
                                        body=body)  # fmt: skip

    async def _replay(self, held: list[Held]) -> list[tuple[str, int, str]]:
        """Held events into the journal as one transaction, in order; (id, seq, ts) each."""
        writer = self._require_writer()
        fut: asyncio.Future[list[tuple[str, int, str]]] = asyncio.get_running_loop().create_future()
        writer.submit(("R", [h.job() for h in held]), fut, "R")
        return await fut

    async def _recovered(self, summary: dict[str, Any]) -> None:
        with contextlib.suppress(JournalError):
            await self.emit(JournalRecoveredEvent(**summary))

    async def mark_published(
        self, up_to_seq: int | None = None, *, seqs: Iterable[int] = ()
    ) -> int:
        """The broker acknowledged these events: take them off the outbox. Returns how many."""
        writer = self._require_writer()
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        marked = tuple(seqs)
        writer.submit(("m", up_to_seq, marked), fut)
        n = await fut
        tail = self._tail
        if marked:
            tail.clear()  # holes: the outbox in SQLite answers from now on
        if up_to_seq is not None:
            self._published_upto = max(self._published_upto, up_to_seq)
            while tail and tail[0][0] <= up_to_seq:
                tail.popleft()
        return n

    async def apply_retention(self, now: datetime | None = None) -> int:
        """Delete published events older than ``retention_days``; return how many."""
        writer = self._require_writer()
        now = now or datetime.fromtimestamp(self._clock(), UTC)
        cutoff = _ts(now - timedelta(days=self.retention_days))
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        writer.submit(("r", cutoff, _ts(now)), fut)
        n = await fut
        if n:
            log.info("journal.retention", deleted=n, before=cutoff)
        return n

    async def _retention_loop(self) -> None:
        while True:
            try:
                await self.apply_retention()
            except JournalError as exc:
                log.warning("journal.retention_failed", error=str(exc))
            await asyncio.sleep(RETENTION_INTERVAL)

    def _delivered(self, c: Round, answered: list[Pending]) -> None:
        """On the loop: results of one writer round, for the jobs it answers (in order).
        An append the round could not commit goes to the fallback, in order."""
        for (ok, value), (fut, what) in zip(c.results, answered, strict=True):
            if isinstance(what, tuple):  # an append: (Held, body)
                if ok:
                    if not fut.done():
                        fut.set_result(self._envelope(what[0], what[1], value[1]))
                else:
                    self._hold(what[0], what[1], fut, value[1])
            elif fut.done():
                continue
            elif not ok:
                fut.set_exception(ERRORS.get(value[0], JournalError)(value[1]))
            else:
                fut.set_result(value)
        if c.took_ms >= SLOW_ROUND_MS:  # a stalled disk (an SD card wearing out?) shows here
            log.info("journal.slow_round", ms=round(c.took_ms, 1), jobs=len(c.results))
        self._backlog += c.backlog_delta
        if c.backlog_delta < 0:
            self._marked.set()
            self._marked = asyncio.Event()
        if c.error is not None:
            if c.error != self._error:
                log.error("journal.cannot_write", error=c.error)
            self._error = c.error
            writer = self._writer
            if (
                writer is not None
                and writer.alive
                and any(not ok and v[0] == "JournalCorrupt" for ok, v in c.results)
            ):
                # the file went bad under us: a new writer process examines it at its
                # start, moves it aside and goes on in a new journal linked to it
                # (``_recover``); meanwhile events wait in the fallback
                log.error("journal.damaged_while_running", error=c.error)
                self._full_next = True
                self._closing_writer = asyncio.create_task(writer.close())
        elif c.appended:
            if self._error is not None:
                log.info("journal.writable")
            self._error = None
        if c.rows:
            tail = self._tail
            if tail and c.rows[0][0] != tail[-1][0] + 1:
                tail.clear()  # never a gap in the tail
            tail.extend(c.rows)
        if c.last_seq != self._last_seq:
            self._last_seq = c.last_seq
            self._announce()

    def _announce(self) -> None:
        """New events committed (or the journal closing): wake whoever waits for them."""
        for fn in self._listeners:
            fn()

    def add_listener(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` on the loop whenever events are committed (and when the journal
        closes): for a publisher that waits on one event of its own for everything
        (commits, acknowledgements, stop) rather than on a task per thing."""
        self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(fn)

    async def wait_drained(self) -> None:
        """Return once every committed event is marked published (backlog 0)."""
        while self._backlog > 0 and self._open:
            await self._marked.wait()

    # -- reading -------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, read_only=True)
            self._local.conn = conn
            self._conns.append(conn)
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._reader is None:
            raise JournalError(f"journal {self.path} is not open")

        def run() -> T:
            try:
                return fn(self._conn())
            except sqlite3.Error as exc:
                raise map_error(exc, self.path, self.max_bytes) from exc

        return await asyncio.get_running_loop().run_in_executor(self._reader, run)

    def _counts(self, conn: sqlite3.Connection) -> tuple[int, int]:
        try:
            last = conn.execute("SELECT max(seq) FROM events").fetchone()[0]
            backlog = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                raise JournalError(f"{self.path} is not a lockgw journal") from exc
            raise
        if last is None:
            cp = latest_checkpoint(conn)
            last = cp.seq if cp is not None else 0
        return int(last), int(backlog)

    async def outbox(self, after: int = 0, limit: int = 100) -> list[tuple[int, bytes]]:
        """Unpublished events with ``seq > after``, oldest first, as ``(seq, wire JSON)``.

        Served from memory when the newest committed events cover ``after + 1`` onwards
        (the publisher keeping up); otherwise read from SQLite."""
        tail = self._tail
        if tail and after >= self._published_upto and tail[0][0] <= after + 1:
            start = after + 1 - tail[0][0]
            return list(itertools.islice(tail, start, start + limit))

        def q(conn: sqlite3.Connection) -> list[tuple[int, bytes]]:
            rows = conn.execute(
                "SELECT e.seq, e.payload FROM outbox o JOIN events e ON e.seq = o.seq "
                "WHERE o.seq > ? ORDER BY o.seq LIMIT ?",
                (after, limit),
            ).fetchall()
            return [(int(s), blob(p)) for s, p in rows]

        return await self._read(q)

    async def unpublished(self, limit: int = 100, *, after: int = 0) -> list[Envelope]:
        """Unpublished events, oldest first."""
        return [envelope_from_wire(p) for _, p in await self.outbox(after, limit)]

    async def read(
        self,
        *,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        door: str | None = None,
        types: Collection[str] | None = None,
        after_seq: int = 0,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[Envelope]:
        """Events for the views (resident, auditor, export), filtered in SQL."""
        where: list[str] = ["seq > ?"]
        args: list[int | str] = [after_seq]
        if since is not None:
            where.append("ts >= ?")
            args.append(_ts(since))
        if until is not None:
            where.append("ts < ?")
            args.append(_ts(until))
        if door is not None:
            where.append("door = ?")
            args.append(door)
        if types is not None:
            types = list(types)
            where.append(f"type IN ({','.join('?' * len(types))})")
            args.extend(types)
        sql = (
            f"SELECT payload FROM events WHERE {' AND '.join(where)} "
            f"ORDER BY seq {'DESC' if newest_first else 'ASC'}"
        )
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)

        def q(conn: sqlite3.Connection) -> list[bytes]:
            return [blob(r[0]) for r in conn.execute(sql, args)]

        out = []
        for payload in await self._read(q):
            try:
                out.append(envelope_from_wire(payload))
            except ValueError as exc:
                raise JournalError(
                    f"journal {self.path}: a row does not parse ({exc}); run lockgw audit verify"
                ) from exc
        return out

    async def verify(self) -> BrokenLink | None:
        """Check the hash chain; the first broken link, or None when intact."""
        return await self._read(verify_chain)

    async def restarts_recorded(self) -> list[Restart]:
        """Every documented restart of this journal (``journal.damaged`` / ``journal.lost``)."""
        return await self._read(restarts)

    async def checkpoint(self) -> Checkpoint | None:
        """The latest retention checkpoint (where the verified chain starts)."""
        return await self._read(latest_checkpoint)

    async def first_seq_since(self, since: datetime | str) -> int | None:
        """The lowest ``seq`` of a row with ``ts`` at or after ``since`` (None: no such row),
        from the time index alone (a covering index scan of that range, never the rows
        before it): with ``read(after_seq=...)`` the journal's tail since a
        time is read without a scan of the rows before it."""
        ts = _ts(since)

        def q(conn: sqlite3.Connection) -> int | None:
            sql = "SELECT MIN(seq) FROM events INDEXED BY events_ts WHERE ts >= ?"
            row = conn.execute(sql, (ts,)).fetchone()
            return None if row is None or row[0] is None else int(row[0])

        return await self._read(q)

    async def head(self) -> tuple[int, str] | None:
        """The newest ``(seq, link hash hex)``: note it down to detect a rewritten tail later."""

        def q(conn: sqlite3.Connection) -> tuple[int, str] | None:
            row = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
            return None if row is None else (int(row[0]), bytes(row[1]).hex())

        return await self._read(q)

    async def head_link(self) -> tuple[int, str]:
        """The newest committed ``(seq, chain link hex)``: the newest row, else the
        retention checkpoint, else ``(0, genesis)`` (what a signed head signs)."""

        def q(conn: sqlite3.Connection) -> tuple[int, str]:
            row = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
            if row is None:
                cp = latest_checkpoint(conn)
                return (cp.seq, cp.hash.hex()) if cp is not None else (0, GENESIS.hex())
            return int(row[0]), blob(row[1]).hex()

        return await self._read(q)

    async def link_at(self, seq: int) -> bytes | None:
        """Row ``seq``'s chain link, None when no such row is kept."""

        def q(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute("SELECT hash FROM events WHERE seq = ?", (seq,)).fetchone()
            return None if row is None else blob(row[0])

        return await self._read(q)

    def stats(self) -> dict[str, Any]:
        """A small snapshot for health reports."""
        return {
            "path": str(self.path),
            "last_seq": self._last_seq,
            "backlog": self._backlog,
            "error": self._error,
            "failures": self._failures,
        }

    def __repr__(self) -> str:
        return (
            f"Journal({json.dumps(str(self.path))}, site={self.site!r}, last_seq={self._last_seq})"
        )
