"""The journal's writer process: ``python -m gateway.journal._child FD PATH SITE MAX_BYTES NICE
[CHECK]``.

It owns the journal's only write connection (:class:`._store.Store`) and serves the
gateway over the socket ``FD`` (one end of a socketpair the gateway made): it reads
every job frame that has arrived, applies them in one transaction (group commit) and
answers with one frame per round. It is a process rather than a thread so that the
commit never waits for the gateway's event loop to let go of the GIL
(bench/unlock_latency.py; docs/design.md, "The journal's writer is a process of its own").

It ignores SIGINT and SIGTERM: the gateway decides when the journal closes (a stopping
gateway still journals its last events), by shutting its end of the socket. It then
finishes what arrived, answers, and exits; the same happens if the gateway dies.
Standard library and ``protocols.errors`` only, so that it starts in a few tens of ms.

It first raises its own scheduling priority to ``NICE`` (``journal.writer_nice``, -10 by
default) where it is allowed to (root, or ``LimitNICE=`` in the systemd unit): on a
busy hub, a writer that wakes to commit then gets a core before the rest, and every
carer at the door waits for that commit (bench/unlock_latency.py). The checkpointer
thread goes back to the priority the process started with.

Frames both ways: a 4-byte big-endian length, then a pickle (both ends are this
package, over a private socketpair). The first frame from here is ``("ready", seq,
backlog, nice, refused, restart, checked)`` (``refused``: why the priority could not be
raised, or None; ``restart``: the ``journal.damaged`` / ``journal.lost`` restart made at
open, or None; ``checked``: ``full`` or ``tail``, the check ``CHECK`` asked for or the full
one it fell back to, ``_recover``)
or ``("failed", error class name, message)``; then one :class:`._store.Round` per round.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

from protocols.errors import JournalError

from ._store import Checkpointer, Job, Store

__all__ = ["FrameReader", "frame", "main"]

_LEN = struct.Struct(">I")
#: a frame larger than this is a bug on the other side, not a job
MAX_FRAME = 64 * 1024 * 1024


def frame(obj: Any) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _LEN.pack(len(data)) + data


class FrameReader:
    """Splits a byte stream into the objects of :func:`frame`."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data

    def take(self, limit: int) -> list[Any]:
        """Up to ``limit`` complete frames from what was fed."""
        out: list[Any] = []
        buf = self._buf
        pos = 0
        while len(out) < limit and len(buf) - pos >= 4:
            (n,) = _LEN.unpack_from(buf, pos)
            if n > MAX_FRAME:
                raise ValueError(f"journal writer: a frame of {n} bytes")
            if len(buf) - pos - 4 < n:
                break
            out.append(pickle.loads(bytes(buf[pos + 4 : pos + 4 + n])))
            pos += 4 + n
        del buf[:pos]
        return out


def serve(
    sock: socket.socket, store: Store, checkpointer: Checkpointer | None = None
) -> None:
    """Rounds until the gateway shuts its end and everything sent has been applied."""
    reader = FrameReader()
    eof = False
    while True:
        jobs: list[Job] = reader.take(Store.MAX_BATCH)
        if jobs:
            t0 = time.perf_counter()
            result = store.round(jobs)
            result.took_ms = (time.perf_counter() - t0) * 1000
            try:
                sock.sendall(frame(result))
            except OSError:  # the gateway is gone; what was committed stays committed
                return
            if result.error is None:
                # the phone has its answer: now where the chain stands, for the next start
                store.write_head()
                if checkpointer is not None:
                    checkpointer.kick()
            continue
        if eof:
            return
        try:
            data = sock.recv(1 << 16)  # wait for work
        except OSError:  # the gateway died (reset): apply what arrived, then stop
            data = b""
        if not data:
            eof = True
            continue
        reader.feed(data)
        while True:  # and take everything else already there: one round for all of it
            try:
                more = sock.recv(1 << 16, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError:
                more = b""
            if not more:
                eof = True
                break
            reader.feed(more)


def raise_priority(nice: int) -> tuple[int, str | None]:
    """Lower this thread's nice value to ``nice`` (never raise it); (nice now, why not)."""
    now = os.getpriority(os.PRIO_PROCESS, 0)
    if nice >= now:
        return now, None
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError as exc:
        return now, f"nice {nice} refused ({exc.strerror}); allow it with LimitNICE={nice}"
    return os.getpriority(os.PRIO_PROCESS, 0), None


def main(argv: list[str]) -> int:
    os.umask(0o077)  # the journal and its -wal / -shm: the owner's only, whatever started us
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    fd, path, site, max_bytes = int(argv[0]), Path(argv[1]), argv[2], int(argv[3])
    check = argv[5] if len(argv) > 5 else "full"
    base = os.getpriority(os.PRIO_PROCESS, 0)
    nice, refused = raise_priority(int(argv[4]))  # before any thread: they would inherit it
    sock = socket.socket(fileno=fd)
    store = Store(path, site, max_bytes=max_bytes or None, check=check)
    try:
        store.open()
    except JournalError as exc:
        sock.sendall(frame(("failed", type(exc).__name__, str(exc))))
        store.close()
        return 1
    checkpointer = Checkpointer(path, nice=base)
    try:
        sock.sendall(
            frame(("ready", store.seq, store.backlog, nice, refused, store.restart, store.checked))
        )
        checkpointer.start()
        serve(sock, store, checkpointer)
    finally:
        checkpointer.stop()
        store.close()
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
