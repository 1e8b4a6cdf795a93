"""When SQLite cannot take an event: keep it, in order, and replay it when it can.

The journal hands :class:`Fallback` every event it could not commit (a full disk or
``journal.max_bytes``, a damaged database, the writer process gone or restarting),
in the order they were emitted. Each is written to the fallback file
(:mod:`._spill`, ``fdatasync``) before its emitter hears back — with the id and time
it will keep — and stays in memory until it is replayed. Once anything is held, every
later event is held behind it, so the journal's order is the order of emission.

A replay loop offers what is held to the writer, oldest first, in batches that commit
as one transaction and skip what a writer that died before answering had already
committed; when nothing is left, ``journal.recovered`` says what happened, and the
file is emptied.

If the fallback file cannot be written either, the event is kept in memory only
(``recording == "unrecorded"``), logged in full (``journal.unrecorded``), and still
replayed if the gateway runs until the journal recovers; beyond :data:`MAX_HELD`
events it is only logged (counted as lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, TypeVar

import structlog

from protocols.errors import JournalError

from ._chain import utc_ms
from ._spill import Held, Spill

__all__ = ["MAX_HELD", "Fallback", "Recording"]

log = structlog.get_logger("lockgw.journal")

T = TypeVar("T")

#: events held at most (in the file and in memory); beyond, an event is only logged
MAX_HELD = 50_000
#: events per replay transaction
REPLAY_BATCH = 500
#: first and longest wait between replay attempts, seconds
REPLAY_FIRST = 0.2
REPLAY_MAX = 10.0

#: ``ok``: every event goes to the journal; ``fallback``: the journal cannot write and
#: events wait in the fallback file; ``unrecorded``: that file cannot be written either
Recording = Literal["ok", "fallback", "unrecorded"]

#: done with a held event: its emitter hears (durably kept?)
Resolve = Callable[[Held], None]
#: give held events to the writer as one replay; resolves to their (id, seq, ts)
Replay = Callable[[list[Held]], Awaitable[list[tuple[str, int, str]]]]


class Fallback:
    """The fallback of one journal (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        *,
        replay: Replay,
        can_replay: Callable[[], bool],
        recovered: Callable[[dict[str, object]], Awaitable[None]],
        changed: Callable[[], None],
    ) -> None:
        self.path = path
        self._replay = replay
        self._can_replay = can_replay
        self._recovered = recovered
        self._changed = changed
        self._spill: Spill | None = None
        self._io: ThreadPoolExecutor | None = None
        self.held: deque[Held] = deque()
        self._to_write: list[tuple[Held, Resolve | None]] = []
        self._writing: asyncio.Task[None] | None = None
        self._replaying: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._spill_failed: str | None = None
        #: why the journal could not take events, for health and ``journal.recovered``
        self.problem: str | None = None
        # this episode, for journal.recovered
        self._replayed = 0
        self._not_durable = 0
        self._seqs: tuple[int, int] | None = None
        self._first_ns: int | None = None
        self._last_ns: int | None = None
        #: events only logged: neither kept in the file nor in memory (MAX_HELD reached)
        self.lost = 0

    # -- lifecycle ------------------------------------------------------------------------
    async def open(self) -> None:
        """Open the file; what an earlier run left in it is held again, to be replayed."""
        self._io = ThreadPoolExecutor(1, thread_name_prefix="journal-spill")
        spill = Spill(self.path)
        try:
            held = await self._run(spill.open)
        except OSError as exc:
            self._spill_failed = f"cannot open {self.path}: {exc.strerror or exc}"
            log.error("journal.fallback_unavailable", error=self._spill_failed)
            return
        self._spill = spill
        if spill.reserve_problem:
            log.warning("journal.fallback_reserve", detail=spill.reserve_problem)
        if held:
            self.problem = f"{len(held)} event(s) found in {self.path} at start-up"
            log.warning("journal.fallback_found", events=len(held), path=str(self.path))
            for h in held:
                self._note(h)
            self.held.extend(held)
            self._start_replay()

    async def close(self) -> None:
        """Finish writing what is queued; what is still held stays in the file."""
        for task in (self._replaying,):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._writing is not None:
            await asyncio.shield(self._writing)
        memory_only = sum(1 for h in self.held if not h.durable)
        if memory_only:
            log.error("journal.unrecorded_at_stop", events=memory_only)
        if self._spill is not None:
            await self._run(self._spill.close)
            self._spill = None
        if self._io is not None:
            self._io.shutdown(wait=True)
            self._io = None

    async def _run(self, fn: Callable[[], T]) -> T:
        assert self._io is not None
        return await asyncio.get_running_loop().run_in_executor(self._io, fn)

    # -- state ------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """Events are held: every new one must wait behind them."""
        return bool(self.held)

    @property
    def recording(self) -> Recording:
        if not self.held:
            return "ok"
        return "unrecorded" if self._spill_failed else "fallback"

    @property
    def not_durable(self) -> int:
        """Events held in memory only (lost if the gateway stops before the journal recovers)."""
        return sum(1 for h in self.held if not h.durable)

    # -- holding ----------------------------------------------------------------------------
    def hold(self, h: Held, done: Resolve | None, problem: str | None) -> None:
        """Keep ``h`` after everything held before it; ``done(h)`` once it is written to
        the fallback file (or known not to be). Synchronous: the order of calls is the
        journal's order."""
        was = self.recording
        if problem is not None and self.problem is None:
            self.problem = problem
        if len(self.held) >= MAX_HELD:
            self.lost += 1
            log.error("journal.unrecorded", id=h.id, body=json.loads(h.body_json), lost=True,
                      detail=f"{MAX_HELD} events already wait for the journal")  # fmt: skip
            if done is not None:
                done(h)
            return
        if not self.held:
            log.error("journal.fallback", problem=self.problem, path=str(self.path))
        self._note(h)
        self.held.append(h)
        self._to_write.append((h, done))
        if self._writing is None or self._writing.done():
            self._writing = asyncio.create_task(self._write_queued(), name="journal-spill")
        self._start_replay()
        if self.recording != was:
            self._changed()

    def _note(self, h: Held) -> None:
        self._first_ns = h.ns if self._first_ns is None else self._first_ns
        self._last_ns = h.ns

    async def _write_queued(self) -> None:
        """Write what is queued, one ``fdatasync`` per batch, until nothing is."""
        while self._to_write:
            batch, self._to_write = self._to_write, []
            items = [h for h, _ in batch]
            was = self.recording
            try:
                if self._spill is None:
                    raise OSError(self._spill_failed or f"{self.path} is not open")
                await self._run(functools.partial(self._spill.append, items))
            except OSError as exc:
                reason = f"cannot write {self.path}: {exc.strerror or exc}"
                if self._spill_failed is None:
                    log.error("journal.fallback_failed", error=reason)
                self._spill_failed = reason
                self._not_durable += len(items)
                for h in items:  # the last trace there is: the system log
                    log.error("journal.unrecorded", id=h.id, ts=utc_ms(h.ns),
                              body=json.loads(h.body_json))  # fmt: skip
            else:
                for h in items:
                    h.durable = True
                if self._spill_failed is not None:
                    log.info("journal.fallback_writable", path=str(self.path))
                self._spill_failed = None
            for h, done in batch:
                if done is not None:
                    done(h)
            if self.recording != was:
                self._changed()

    # -- replaying --------------------------------------------------------------------------
    def kick(self) -> None:
        """The journal may write again (a new writer process): try now."""
        self._wake.set()

    def _start_replay(self) -> None:
        if self._replaying is None or self._replaying.done():
            self._replaying = asyncio.create_task(self._replay_loop(), name="journal-replay")

    async def _replay_loop(self) -> None:
        delay = REPLAY_FIRST
        while self.held:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self._wake.clear()
            if not self._can_replay():
                delay = min(delay * 2, REPLAY_MAX)
                continue
            batch = list(itertools.islice(self.held, REPLAY_BATCH))
            try:
                done = await self._replay(batch)
            except JournalError as exc:
                self.problem = str(exc)
                delay = min(delay * 2, REPLAY_MAX)
                continue
            for _ in batch:
                self.held.popleft()
            self._replayed += len(done)
            first = done[0][1] if self._seqs is None else self._seqs[0]
            self._seqs = (first, done[-1][1])
            delay = 0.0
        await self._drained()

    async def _drained(self) -> None:
        """Everything held is in the journal: say so on the stream, empty the file."""
        summary: dict[str, object] = {
            "since": utc_ms(self._first_ns or 0),
            "until": utc_ms(self._last_ns or 0),
            "events": self._replayed,
            "first_seq": self._seqs[0] if self._seqs else None,
            "last_seq": self._seqs[1] if self._seqs else None,
            "problem": self.problem or "unknown",
            "not_durable": self._not_durable,
            "lost": self.lost,
        }
        log.info("journal.replayed", **summary)
        self._replayed, self._not_durable, self.lost = 0, 0, 0
        self._seqs = self._first_ns = self._last_ns = None
        self.problem = None
        self._changed()
        if self._spill is not None:
            spill = self._spill
            try:  # after every write queued before it: the executor keeps the order
                await self._run(lambda: None if self.held else spill.reset())
            except OSError as exc:  # replaying it again later is harmless (ids are kept)
                log.warning("journal.fallback_reset_failed", error=str(exc))
        await self._recovered(summary)
