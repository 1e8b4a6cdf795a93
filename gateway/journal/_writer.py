"""The gateway's side of the journal's writer process (``_child``).

:meth:`WriterProcess.start` makes a socketpair, starts the child with one end and
speaks to it through the event loop with the other: :meth:`submit` writes a job frame
(the transport sends at once when its buffer is empty), and every answer frame is
handed to ``deliver`` straight from the socket's read callback, together with the
futures of the jobs it answers (the child answers in the order it was asked).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import structlog

from protocols.errors import JournalError

from ._child import FrameReader, frame
from ._store import ERRORS, Job, Round

__all__ = ["Pending", "SyscallRefused", "WriterProcess"]

log = structlog.get_logger("lockgw.journal")

#: how long the child may take to open the database and say so, seconds: it first checks
#: the journal (``_recover``): the tail check takes milliseconds, but the full one (no
#: head file, damage suspected) ~1-3 s per 100,000 events on the bench VM, a Pi is slower
START_TIMEOUT = 120.0
#: how long closing waits for the child to finish what it was given, seconds
STOP_TIMEOUT = 30.0

_ROOT = str(Path(__file__).resolve().parents[2])

class SyscallRefused(JournalError):
    """The writer process was killed by SIGSYS before it was ready: a seccomp filter
    (systemd's ``SystemCallFilter=``) refused one of its calls — ``setpriority``, in a
    unit that predates ``journal.writer_nice``."""


#: a submitted job's future and what the journal needs to finish it (None for a mark or
#: retention; for an append the event; see ``Journal._delivered``)
Pending = tuple[asyncio.Future[Any], Any]


class WriterProcess(asyncio.Protocol):
    """One writer child process and the jobs it has not answered yet."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        deliver: Callable[[Round, list[Pending]], None],
        lost: Callable[[WriterProcess, JournalError, list[Pending]], None],
    ) -> None:
        self.proc = proc
        self._deliver = deliver
        self._lost = lost
        self._frames = FrameReader()
        self._pending: deque[Pending] = deque()
        self._transport: asyncio.Transport | None = None
        self._closing = False
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[tuple[int, int]] = loop.create_future()
        #: the child's nice value, and why it could not have the one asked for (or None)
        self.nice = 0
        self.nice_refused: str | None = None
        #: the restart the child made at open (``_recover``): event body and seq, or None
        self.restart: dict[str, Any] | None = None
        #: the check the child made before it opened: ``full`` or ``tail``
        self.checked = "full"
        self.gone: asyncio.Future[None] = loop.create_future()

    @classmethod
    async def start(
        cls,
        path: Path,
        site: str,
        max_bytes: int | None,
        deliver: Callable[[Round, list[Pending]], None],
        lost: Callable[[WriterProcess, JournalError, list[Pending]], None],
        *,
        nice: int = 0,
        check: str = "full",
    ) -> tuple[WriterProcess, tuple[int, int]]:
        """Start a child for ``path`` at scheduling priority ``nice`` where allowed, that
        makes the ``check`` (``full`` / ``tail``, ``_recover``) before it opens; (the
        process, (last seq, backlog)). Raises the child's JournalError when it cannot
        open the journal."""
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH")) if p)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gateway.journal._child",
                str(theirs.fileno()),
                str(path),
                site,
                str(max_bytes or 0),
                str(nice),
                check,
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
            )
        except OSError as exc:
            ours.close()
            raise JournalError(f"journal {path}: cannot start its writer process ({exc})") from exc
        finally:
            theirs.close()
        loop = asyncio.get_running_loop()
        writer: WriterProcess | None = None
        try:
            _, writer = await loop.create_unix_connection(
                lambda: cls(proc, deliver, lost), sock=ours
            )
            async with asyncio.timeout(START_TIMEOUT):
                state = await writer.ready
        except BaseException as exc:
            if writer is None:
                ours.close()
            else:
                writer._abort()
            # a child that failed or died ends by itself: let the watcher collect its exit
            # status (killing it first would reap it without one: Popen.send_signal polls)
            await _reap(proc, 1.0 if isinstance(exc, JournalError) else 0.0)
            if isinstance(exc, JournalError) and proc.returncode == -signal.SIGSYS:
                raise SyscallRefused(f"{exc}: a system-call filter refused it a call") from exc
            raise
        return writer, state

    # -- asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (uvloop's is not a subclass of asyncio.Transport)
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._frames.feed(data)
        for msg in self._frames.take(1 << 30):
            if not self.ready.done():
                self._hello(msg)
                continue
            n = len(msg.results)
            answered = [self._pending.popleft() for _ in range(n)]
            self._deliver(msg, answered)

    def _hello(self, msg: tuple[Any, ...]) -> None:
        if msg[0] == "ready":
            self.nice, self.nice_refused = int(msg[3]), msg[4]
            self.restart = msg[5] if len(msg) > 5 else None
            self.checked = str(msg[6]) if len(msg) > 6 else "full"
            self.ready.set_result((int(msg[1]), int(msg[2])))
        else:
            self.ready.set_exception(ERRORS.get(msg[1], JournalError)(msg[2]))

    def eof_received(self) -> bool | None:
        return None  # close our end too

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        code = self.proc.returncode
        err = JournalError(
            "the journal's writer process stopped"
            + (f" (exit code {code})" if code is not None else "")
            + (f": {exc}" if exc else "")
        )
        if not self.ready.done():
            self.ready.set_exception(err)
        pending, self._pending = list(self._pending), deque()
        if not self.gone.done():
            self.gone.set_result(None)
        # what it had not answered, in the order it was asked: the journal decides (an
        # append goes to its fallback; it may have been committed just before)
        self._lost(self, err, pending)

    # -- used by the journal --------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self._transport is not None and not self._closing

    def submit(self, job: Job, fut: asyncio.Future[Any], body: Any = None) -> None:
        if self._transport is None or self._closing:
            raise JournalError("the journal's writer process is not running")
        self._pending.append((fut, body))
        self._transport.write(frame(job))

    async def close(self) -> None:
        """Let the child apply and answer everything sent, then exit."""
        if self._closing:
            return
        self._closing = True
        if self._transport is not None:
            self._transport.write_eof()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_TIMEOUT):
                await asyncio.shield(self.gone)
        self._abort()
        await _reap(self.proc, STOP_TIMEOUT)

    def _abort(self) -> None:
        """Drop the connection without waiting (the child then ends on its own)."""
        self._closing = True
        if self._transport is not None:
            self._transport.abort()


async def _reap(proc: asyncio.subprocess.Process, timeout: float) -> None:
    """Wait for the child to exit (``timeout`` seconds at most), then make sure it has."""
    try:
        async with asyncio.timeout(timeout):
            await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
