"""The journal's fallback file: events SQLite could not take, in order, until it can.

``<data_dir>/journal.spill`` is written with plain ``pwrite`` + ``fdatasync`` and no
SQLite, so that it works when the journal does not: a full disk or a full
``journal.max_bytes`` (the limit is on the SQLite file only), a damaged database, a
writer process being restarted. Its space is reserved when the journal opens
(:data:`RESERVE`, zeros written by ``posix_fallocate``): on a disk that is full by then
it still takes a few thousand events.

Layout::

    header   b"LGWSPILL" | epoch (8 bytes) | crc32 of the 16 bytes before (4) | zeros to 32
    record   length n > 0 (4, big-endian) | crc32(epoch || payload) (4) | payload (n bytes)

The records end at the first one that does not verify: the zeros of the reserved
space, a write torn by a power cut, or a record of an earlier epoch. Emptying the
file after its events reached the journal (:meth:`Spill.reset`) writes a new epoch
into the header, so what follows it no longer counts, and gives back any space grown
past the reserve. Standard library only.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RESERVE", "Held", "Spill", "spill_path"]

#: bytes reserved for the file when the journal opens: ~4,000 access events of ~500 bytes
RESERVE = 2 * 1024 * 1024
MAGIC = b"LGWSPILL"
HEADER = 32
_REC = struct.Struct(">II")
#: a record longer than this is not one of ours (an event body is a few hundred bytes)
MAX_RECORD = 1024 * 1024


def spill_path(journal: Path) -> Path:
    """The fallback file beside a journal file."""
    return journal.with_name("journal.spill")


@dataclass(slots=True)
class Held:
    """One event the journal has not taken yet: its id and time are final (the phone
    was told this id), its ``seq`` is given when it reaches the journal."""

    id: str
    ns: int
    type: str
    door: str | None
    body_json: str
    #: written to the fallback file (False: kept in memory only, lost if the gateway stops)
    durable: bool = False

    def record(self) -> bytes:
        return json.dumps(
            {"id": self.id, "ns": self.ns, "type": self.type, "door": self.door,
             "body": self.body_json},
            separators=(",", ":"),
        ).encode()  # fmt: skip

    @classmethod
    def from_record(cls, data: bytes) -> Held:
        obj = json.loads(data)
        door = obj["door"]
        if not (
            isinstance(obj["id"], str)
            and isinstance(obj["ns"], int)
            and isinstance(obj["type"], str)
            and isinstance(obj["body"], str)
            and (door is None or isinstance(door, str))
        ):
            raise ValueError("a spill record with fields of the wrong type")
        return cls(obj["id"], obj["ns"], obj["type"], door, obj["body"], durable=True)

    def job(self) -> tuple[str, str | None, str, int, str]:
        """What the writer process needs to append it (see ``_store.Job``)."""
        return (self.type, self.door, self.body_json, self.ns, self.id)


class Spill:
    """The fallback file; every method does blocking I/O (call it off the event loop)."""

    def __init__(self, path: Path, *, reserve: int = RESERVE) -> None:
        self.path = path
        self.reserve = reserve
        self._fd: int | None = None
        self._epoch = b""
        self._end = HEADER
        self._size = 0
        #: why the space could not be reserved (None when it was)
        self.reserve_problem: str | None = None

    @property
    def count_bytes(self) -> int:
        """Bytes of records in the file."""
        return self._end - HEADER

    def open(self) -> list[Held]:
        """Open (creating when new), reserve the space, return the records held, in order.
        A file that is not a spill file, or whose header is torn, is renamed aside and
        a new one started (its name is logged by the caller from the error)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._fd = fd
        size = os.fstat(fd).st_size
        head = os.pread(fd, HEADER, 0)
        held: list[Held] = []
        if len(head) == HEADER and head[:8] == MAGIC and _crc(head[:16]) == head[16:20]:
            self._epoch = head[8:16]
            held, self._end = self._scan(fd, size)
        else:
            if size > 0:  # not ours, or torn before the first record: start over
                os.ftruncate(fd, 0)
            self._new_epoch(fd)
        self._size = os.fstat(fd).st_size
        self._reserve(self._end + self.reserve)
        return held

    def _scan(self, fd: int, size: int) -> tuple[list[Held], int]:
        out: list[Held] = []
        pos = HEADER
        while pos + _REC.size <= size:
            n, crc = _REC.unpack(os.pread(fd, _REC.size, pos))
            if n == 0 or n > MAX_RECORD or pos + _REC.size + n > size:
                break
            data = os.pread(fd, n, pos + _REC.size)
            if _crc(self._epoch + data) != struct.pack(">I", crc):
                break
            try:
                out.append(Held.from_record(data))
            except (ValueError, KeyError, TypeError):
                break
            pos += _REC.size + n
        return out, pos

    def _new_epoch(self, fd: int) -> None:
        self._epoch = os.urandom(8)
        head = MAGIC + self._epoch
        head += _crc(head)
        os.pwrite(fd, head.ljust(HEADER, b"\0"), 0)
        os.fdatasync(fd)
        self._end = HEADER

    def _reserve(self, upto: int) -> None:
        """Make sure the file's blocks up to ``upto`` are allocated (zeros)."""
        assert self._fd is not None
        if self._size >= upto:
            return
        try:
            os.posix_fallocate(self._fd, self._size, upto - self._size)
        except OSError as exc:
            self.reserve_problem = (
                f"could not reserve {upto - self._size} bytes for {self.path}: {exc.strerror}"
            )
        else:
            self.reserve_problem = None
        self._size = os.fstat(self._fd).st_size

    def append(self, held: list[Held]) -> None:
        """Write ``held`` after the last record and flush it to the disk (one
        ``fdatasync``). Raises OSError when it cannot: then none of them counts (a part
        written does not verify, and the next append writes over it)."""
        if self._fd is None:
            raise OSError(errno.EBADF, f"{self.path} is not open")
        out = bytearray()
        for h in held:
            data = h.record()
            out += _REC.pack(len(data), int.from_bytes(_crc(self._epoch + data), "big")) + data
        end = self._end + len(out)
        if self._size - end < self.reserve // 4:  # keep space reserved ahead while there is some
            self._reserve(end + self.reserve)
        written = os.pwrite(self._fd, bytes(out), self._end)
        if written != len(out):
            raise OSError(errno.ENOSPC, f"{self.path}: short write ({written} of {len(out)})")
        os.fdatasync(self._fd)
        self._end = end

    def reset(self) -> None:
        """Every event in the file has reached the journal: empty it (a new epoch), and
        give back what grew past the reserve."""
        if self._fd is None:
            return
        self._new_epoch(self._fd)
        if self._size > HEADER + self.reserve:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, HEADER + self.reserve)
                self._size = HEADER + self.reserve
        self._reserve(HEADER + self.reserve)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _crc(data: bytes) -> bytes:
    return struct.pack(">I", zlib.crc32(data))
