"""Signed journal heads (``protocols.journal_head``): the file kept beside the journal, the
daemon's signer, and the check ``lockgw audit verify`` makes against them.

``journal-heads.json`` (beside ``journal.sqlite3``) keeps the newest :data:`KEEP` heads,
oldest first, with a SHA-256 over them: ``{"v": 1, "heads": [...], "sha256": "<hex>"}``.
It is replaced whole (write, fsync, rename). Each head is signed on its own, so the
checksum only tells a torn or edited file from a good one; a damaged file is moved aside
and a new one started (``journal.heads_damaged`` in the log).

What a head proves, and what it cannot (root on the hub can sign a new head with the
site key it holds), is in docs/audit.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from protocols.journal_head import HeadError, SignedHead, parse_head, sign_head

from ._chain import utc_ms

__all__ = [
    "KEEP",
    "HeadCheck",
    "HeadSigner",
    "check_head",
    "heads_path",
    "read_heads",
    "write_heads",
]

log = structlog.get_logger("lockgw.journal")

#: how many signed heads the file beside the journal keeps
KEEP = 8


def heads_path(journal: Path) -> Path:
    return journal.with_name("journal-heads.json")


def _digest(heads: list[dict[str, Any]]) -> str:
    return hashlib.sha256(
        json.dumps(heads, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def read_heads(path: Path) -> list[SignedHead]:
    """The heads in the file, oldest first ([] when there is none). Raises
    :class:`HeadError` for a file that is there but damaged."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise HeadError(f"cannot be read ({exc.strerror})") from None
    try:
        obj = json.loads(raw)
    except ValueError:
        raise HeadError("is not JSON (torn or edited)") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("heads"), list):
        raise HeadError("is not a heads file")
    if obj.get("sha256") != _digest(obj["heads"]):
        raise HeadError("its checksum does not match its heads (torn or edited)")
    return [parse_head(h) for h in obj["heads"]]


def write_heads(path: Path, heads: list[SignedHead]) -> None:
    """Replace the file with these heads (the newest :data:`KEEP`), durably."""
    kept = [h.wire() for h in heads[-KEEP:]]
    data = json.dumps({"v": 1, "heads": kept, "sha256": _digest(kept)}, indent=1).encode()
    tmp = path.with_name(f".{path.name}.new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class HeadSigner:
    """Signs the journal's head with the site key: at :meth:`start`, every ``interval``
    seconds while events are added or the last head could not be kept (:meth:`run`), and
    once more at stop
    (:meth:`sign_now`). Each new head goes to the file beside the journal and to
    ``on_signed`` (the MQTT link puts it in the retained status)."""

    def __init__(
        self,
        journal: Any,  # gateway.journal.Journal (not imported: it brings pydantic models)
        site: str,
        key: Any,  # an Ed25519PrivateKey
        *,
        interval: float,
        on_signed: Callable[[SignedHead], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.journal = journal
        self.site = site
        self.key = key
        self.interval = interval
        self.on_signed = on_signed
        self.path = heads_path(journal.path)
        self.heads: list[SignedHead] = []
        self.last_error: str | None = None
        self._clock = clock
        self._lock = asyncio.Lock()

    @property
    def latest(self) -> SignedHead | None:
        return self.heads[-1] if self.heads else None

    async def start(self) -> None:
        try:
            self.heads = await asyncio.to_thread(read_heads, self.path)
        except HeadError as exc:
            aside = self.path.with_name(
                f"{self.path.name}.damaged-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
            )
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            log.error("journal.heads_damaged", file=str(self.path), problem=str(exc),
                      kept_as=str(aside))  # fmt: skip
            self.heads = []
        if self.latest is not None and self.on_signed is not None:
            self.on_signed(self.latest)
        await self.sign_now()

    async def sign_now(self) -> SignedHead | None:
        """Sign the journal's head unless the newest signed head already is it."""
        async with self._lock:
            try:
                seq, link = await self.journal.head_link()
            except Exception as exc:  # a journal that cannot be read: said, tried again later
                self._failed(f"cannot read the journal's head: {exc}")
                return None
            latest = self.latest
            if latest is not None and (latest.seq, latest.hash) == (seq, link):
                if self.last_error is not None:  # signed but not kept (or not read): now
                    await self._keep(self.heads)
                return latest
            head = sign_head(self.key, self.site, seq, link, utc_ms(int(self._clock() * 1e9)))
            await self._keep([*self.heads, head])
            self.heads = [*self.heads, head][-KEEP:]
            if self.on_signed is not None:
                self.on_signed(head)
            return head

    async def _keep(self, heads: list[SignedHead]) -> None:
        """Write ``heads`` beside the journal; a failure is said (health) until one works."""
        try:
            await asyncio.to_thread(write_heads, self.path, heads)
        except OSError as exc:
            # the head still goes out on status: the platform's copy is the one that counts
            self._failed(f"cannot write {self.path}: {exc.strerror or exc}")
        else:
            self.last_error = None

    def _failed(self, problem: str) -> None:
        if problem != self.last_error:
            log.error("journal.head_not_signed", problem=problem)
        self.last_error = problem

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            latest = self.latest
            # new events to cover, or the last head not kept: a fixed disk clears the
            # warning at the next interval, not only at the next event
            if latest is None or latest.seq != self.journal.last_seq or self.last_error:
                await self.sign_now()


@dataclass(frozen=True, slots=True)
class HeadCheck:
    """What :func:`check_head` found: ``ok`` and a sentence."""

    ok: bool
    text: str


def _at(ts: str) -> str:
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S UTC")
    return ts


def check_head(
    head: SignedHead,
    *,
    last_seq: int,
    link: bytes | None,
    checkpoint: tuple[int, bytes] | None,
    restarts: Sequence[Any] = (),
) -> HeadCheck:
    """Does the journal (an intact chain ending at ``last_seq``; ``link``: row
    ``head.seq``'s link, None when no such row is kept; ``checkpoint``: where retention
    cut it) hold what ``head`` signed?"""
    at = _at(head.ts)
    if head.seq > last_seq:
        return HeadCheck(
            False,
            f"rows after seq {last_seq} were removed: the signed head of {at} covers seq "
            f"{head.seq}, the journal ends at {last_seq}",
        )
    if head.seq == 0:
        return HeadCheck(True, f"the signed head of {at} was signed before the first event")
    if checkpoint is not None and head.seq <= checkpoint[0]:
        if head.seq == checkpoint[0] and checkpoint[1].hex() != head.hash:
            return HeadCheck(
                False,
                f"the journal was rewritten: the retention checkpoint at seq {head.seq} "
                f"differs from the signed head of {at}",
            )
        return HeadCheck(
            True,
            f"the signed head of {at} (seq {head.seq}) is older than what retention kept "
            f"(from seq {checkpoint[0] + 1}): nothing to compare",
        )
    if link is None:
        # a documented restart (journal.damaged / journal.lost, _store.Restart) after the
        # head: its rows are in the kept file or lost, and verify names the restart
        after = [r for r in restarts if r.seq > head.seq]
        if after:
            r = after[0]
            return HeadCheck(
                True,
                f"row {head.seq}, which the signed head of {at} covers, is not in this "
                f"journal: it was started again at seq {r.seq} ({r.kind}), see above",
            )
        return HeadCheck(
            False,
            f"row {head.seq}, which the signed head of {at} covers, is not in the journal",
        )
    if link.hex() != head.hash:
        return HeadCheck(
            False,
            f"the journal was rewritten: row {head.seq}'s link differs from the signed head "
            f"of {at}",
        )
    return HeadCheck(True, f"the journal holds the signed head of {at} (seq {head.seq})")
