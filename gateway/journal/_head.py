"""The journal's head file: where the chain stood at the last commit, kept beside the
journal so that a journal that disappears (deleted, emptied, its ``-wal`` lost) is
noticed at the next start instead of silently starting over at seq 1.

``<data_dir>/journal.head`` holds the checksummed envelope of the access state files
(``gateway.access.state``: ``{"lockgw_state": 1, "sha256": <hex>, "data": <value>}``,
the checksum over the canonical JSON of ``data``), with ``data`` =
``{"site": ..., "seq": N, "hash": <hex of seq N's link>}``, padded with spaces to a
fixed size so that each update is one ``pwrite`` over the same bytes (no rename, no
fsync on the door's path: the journal's own commit is the durable record; this file
only has to be no further ahead than the journal). The writer process updates it after
it has answered a round, so the phone never waits for it; the checkpointer thread
flushes it with the database. Standard library only (the writer process reads it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HEAD_SIZE", "Head", "HeadFile", "head_path", "read_head"]

#: the file's size: the JSON envelope padded with spaces (a 64-hex hash and a site id fit)
HEAD_SIZE = 512


def head_path(journal: Path) -> Path:
    """The head file beside a journal file."""
    return journal.with_name("journal.head")


@dataclass(frozen=True, slots=True)
class Head:
    site: str
    seq: int
    hash: str


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def encode(head: Head) -> bytes:
    data = {"site": head.site, "seq": head.seq, "hash": head.hash}
    doc = {"lockgw_state": 1, "sha256": hashlib.sha256(_canonical(data)).hexdigest(), "data": data}
    raw = json.dumps(doc, sort_keys=True).encode()
    if len(raw) >= HEAD_SIZE:
        raise ValueError("a site id too long for the journal's head file")
    return raw.ljust(HEAD_SIZE - 1) + b"\n"


def read_head(path: Path) -> tuple[Head | None, str | None]:
    """(the head, None); (None, None) when there is no file; (None, why) when it is
    damaged (unreadable, wrong checksum, wrong fields)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"{path} cannot be opened ({exc.strerror})"
    try:
        raw = os.read(fd, HEAD_SIZE * 2)
    except OSError as exc:
        return None, f"{path} cannot be read ({exc.strerror})"
    finally:
        os.close(fd)
    try:
        doc = json.loads(raw)
        data = doc["data"]
        if doc.get("lockgw_state") != 1 or hashlib.sha256(_canonical(data)).hexdigest() != doc.get(
            "sha256"
        ):
            return None, f"{path} fails its checksum (changed or partly written)"
        head = Head(str(data["site"]), int(data["seq"]), str(data["hash"]))
        bytes.fromhex(head.hash)
    except (ValueError, KeyError, TypeError):
        return None, f"{path} is not a journal head file" if raw.strip() else f"{path} is empty"
    return head, None


class HeadFile:
    """The writer process's handle on the head file (blocking I/O, off the gateway's loop)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._last: tuple[int, str] | None = None
        #: why the file could not be written (None when it could): the journal goes on
        self.problem: str | None = None

    def write(self, head: Head) -> None:
        if self._last == (head.seq, head.hash):
            return
        try:
            if self._fd is None:
                fd = os.open(
                    self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
                )
                self._fd = fd
                os.ftruncate(fd, HEAD_SIZE)  # whatever was there before: one record
            data = encode(head)
            if os.pwrite(self._fd, data, 0) != len(data):
                raise OSError(28, "short write")
        except OSError as exc:
            self.problem = f"cannot write {self.path}: {exc.strerror or exc}"
            return
        self.problem = None
        self._last = (head.seq, head.hash)

    def sync(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.fdatasync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None
