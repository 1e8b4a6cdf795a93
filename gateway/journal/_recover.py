"""At start-up, before the writer opens the journal: is it whole, and is it all there?

:func:`examine` runs in the journal's writer process, before anything is written:

- **Damaged** — SQLite's ``quick_check`` finds the file damaged, SQLite cannot read it
  at all (garbage bytes, a truncated file, not a database), or the hash chain does not
  verify (an edited or deleted row). The file (and its ``-wal``/``-shm``) is moved
  aside, kept for forensics as ``journal.sqlite3.damaged-<UTC time>``, and a new
  journal is started. Its first row, ``journal.damaged``, continues the seq after the
  highest one known (never reusing a seq the platform may have seen) and links into
  the chain at the last row that verified: the chain goes on, with a documented gap.
- **Lost** — the journal is missing or empty, or ends before the seq the head file
  (``_head``) says was committed (a deleted ``-wal``, a restored backup), while the
  head file says seq N: ``journal.lost`` is the next row, at N + 1, linking to the
  head file's hash (or, when rows were lost from the end of a journal that is
  otherwise whole, to its last row).

The restart is recorded in the journal's ``meta`` (key ``restarts``) so that
``lockgw audit verify`` follows the chain across it and names it
(``_store.walk_chain``). Standard library only.

**Full or tail.** The full check reads every row and every page: its cost grows with
the journal (bench/journal_start.py: ~2-3 s for 200,000 events here, more on a Pi,
more with a cold cache after a power cut). ``examine(..., full=False)`` (``lockgw run``)
checks only what the head file does not vouch for: row ``head.seq`` still has the link
the head file recorded (and its content still gives that link), and the rows after it
(those committed after the last head write) chain on from it — a few indexed reads,
whatever the journal's length. Anything it cannot vouch for (no head file, a damaged
one, a head row missing or with another link, a tail that does not verify, SQLite
cannot read it) falls back to the full check, so every finding is still made here by the
full check, as before. The full check then runs after the gateway is ready, in a process
of its own (``python -m gateway.journal._recover PATH SITE``, :func:`main`, at a lower
priority); what it finds is handled by the journal as a damage found while running
(``Journal.check_in_background``; docs/audit.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from protocols.errors import JournalForeign

from ._chain import GENESIS
from ._head import Head, read_head
from ._store import blob, latest_checkpoint, restarts, walk_chain

__all__ = ["Plan", "examine", "main", "move_aside"]


@dataclass(frozen=True, slots=True)
class Plan:
    """A restart to make: the journal's next row is ``kind`` at ``seq`` + 1, linking to
    ``link_hash`` (the link of ``link_seq``)."""

    kind: str  # journal.damaged | journal.lost
    problem: str
    seq: int
    link_seq: int
    link_hash: bytes
    link_from: str  # journal | head_file | genesis
    kept_as: str | None
    #: the head file was damaged too (reported in the event)
    head_problem: str | None = None

    def body(self) -> dict[str, object]:
        """The event's body (``protocols.events.JournalRestartEvent``)."""
        return {
            "type": self.kind,
            "problem": self.problem,
            "kept_as": self.kept_as,
            "last_seq": self.seq,
            "link_seq": self.link_seq,
            "link_hash": self.link_hash.hex(),
            "link_from": self.link_from,
        }

    def record(self) -> dict[str, object]:
        """Its entry in the journal's ``meta`` ``restarts`` list."""
        return {
            "seq": self.seq + 1,
            "link_seq": self.link_seq,
            "link_hash": self.link_hash.hex(),
            "kind": self.kind,
            "link_from": self.link_from,
            "kept_as": self.kept_as,
            "at": time.time(),
        }


def move_aside(path: Path, tag: str) -> str | None:
    """Rename the journal and its ``-wal``/``-shm`` to ``<name>.<tag>-<UTC time>``; the
    main file's new name (or the WAL's, when only that was there)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = path.with_name(f"{path.name}.{tag}-{stamp}")
    n = 1
    while base.exists():
        n += 1
        base = path.with_name(f"{path.name}.{tag}-{stamp}-{n}")
    kept: str | None = None
    for suffix in ("", "-wal", "-shm"):
        src = path.with_name(path.name + suffix)
        if not src.exists():
            continue
        dst = base.with_name(base.name + suffix)
        os.replace(src, dst)
        if kept is None and suffix != "-shm":
            kept = str(dst)
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return kept


@dataclass(frozen=True, slots=True)
class _Found:
    problem: str | None
    last_seq: int
    last_hash: bytes
    max_seq: int


def _inspect(path: Path, site: str, *, read_only: bool = False) -> _Found:
    """Open the journal and check it whole: SQLite's pages, its site, its chain. A
    truncated file SQLite cannot read at all is read again from a copy padded to the
    size its header gives: the rows before the cut then still verify."""
    found = _inspect_file(path, path, site, read_only=read_only)
    if found.last_seq == 0 and found.problem is not None and found.problem.startswith("SQLite"):
        pad = path.with_name(path.name + ".inspect")
        try:
            if _padded_copy(path, pad):
                again = _inspect_file(pad, path, site)
                if again.last_seq > 0:
                    return _Found(f"{found.problem}; it is truncated", again.last_seq,
                                  again.last_hash, again.max_seq)  # fmt: skip
        except OSError:
            pass
        finally:
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(OSError):
                    pad.with_name(pad.name + suffix).unlink()
    return found


def _padded_copy(path: Path, pad: Path) -> bool:
    """Copy ``path`` to ``pad`` padded with zeros to its header's size; False when the
    file is not shorter than its header says."""
    with open(path, "rb") as f:
        header = f.read(100)
    if len(header) < 100 or not header.startswith(b"SQLite format 3\0"):
        return False
    page = int.from_bytes(header[16:18], "big")
    page = 65536 if page == 1 else page
    want = page * int.from_bytes(header[28:32], "big")
    if want <= path.stat().st_size:
        return False
    shutil.copyfile(path, pad)
    os.truncate(pad, want)
    return True


def _connect(path: Path, read_only: bool) -> sqlite3.Connection:
    if read_only:  # beside a running writer (the check after start)
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    return sqlite3.connect(path, isolation_level=None)


def _check_site(conn: sqlite3.Connection, name: Path, site: str) -> None:
    try:
        found = conn.execute("SELECT value FROM meta WHERE key = 'site'").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        found = None
    if found is not None and found[0] != site:
        raise JournalForeign(
            f"journal {name} belongs to site {found[0]!r}, not {site!r}; "
            "point data_dir at this site's own directory"
        )


def _inspect_file(path: Path, name: Path, site: str, *, read_only: bool = False) -> _Found:
    try:
        conn = _connect(path, read_only)
    except sqlite3.Error as exc:
        return _Found(f"SQLite cannot open it ({exc})", 0, GENESIS, 0)
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        # one read transaction: a writer beside it (the check after start) commits
        # and runs retention meanwhile; the walk sees one state of the journal
        conn.execute("BEGIN")
        _check_site(conn, name, site)
        has_events = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'"
        ).fetchone()
        if has_events:  # first the chain: it finds the last row that verifies
            walk = walk_chain(conn)
            last_seq, last_hash, max_seq = walk.last_seq, walk.last_hash, walk.max_seq
            with contextlib.suppress(sqlite3.DatabaseError):
                top = conn.execute("SELECT max(seq) FROM events").fetchone()[0]
                max_seq = max(max_seq, int(top or 0))
            if walk.broken is not None:
                return _Found(f"its hash chain is broken at {walk.broken}", last_seq, last_hash,
                              max_seq)  # fmt: skip
        else:
            last_seq, last_hash, max_seq = 0, GENESIS, 0
        try:
            checks = [str(r[0]) for r in conn.execute("PRAGMA quick_check(5)").fetchall()]
        except sqlite3.DatabaseError as exc:
            checks = [str(exc)]
        problem = None if checks == ["ok"] else "SQLite finds it damaged: " + "; ".join(checks)
        return _Found(problem, last_seq, last_hash, max_seq)
    except sqlite3.DatabaseError as exc:
        return _Found(f"SQLite cannot read it ({exc})", 0, GENESIS, 0)
    finally:
        conn.close()


def _tail(path: Path, site: str, head: Head) -> _Found | None:
    """The tail check (module docstring): the journal as the head file vouches for it,
    or None when it cannot vouch for it (then the full check decides)."""
    try:
        conn = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error:
        return None
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        _check_site(conn, path, site)
        if not conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'"
        ).fetchone():
            return None
        top = conn.execute("SELECT max(seq) FROM events").fetchone()[0]
        if top is None or head.seq < 1 or head.seq > int(top):
            return None  # rows lost from the end (or none): the full check finds how many
        row = conn.execute("SELECT hash FROM events WHERE seq = ?", (head.seq,)).fetchone()
        if row is None or blob(row[0]) != bytes.fromhex(head.hash):
            return None  # the row the head vouches for is gone or was rewritten
        # the link the head row was made from: its own content must still give its link
        start: tuple[int, bytes] | None = None
        restart = next((r for r in restarts(conn) if r.seq == head.seq), None)
        cp = latest_checkpoint(conn)
        if restart is not None:
            start = (restart.link_seq, bytes.fromhex(restart.link_hash))
        elif cp is not None and cp.seq == head.seq - 1:
            start = (cp.seq, cp.hash)
        elif head.seq == 1:
            start = (0, GENESIS)
        else:
            before = conn.execute(
                "SELECT hash FROM events WHERE seq = ?", (head.seq - 1,)
            ).fetchone()
            if before is not None:
                start = (head.seq - 1, blob(before[0]))
        if start is None:
            return None
        walk = walk_chain(conn, after=start)
        if walk.broken is not None or walk.last_seq != int(top):
            return None
        return _Found(None, walk.last_seq, walk.last_hash, int(top))
    except (sqlite3.DatabaseError, ValueError):
        return None  # SQLite cannot read what it needs: the full check says what is wrong
    finally:
        conn.close()


def examine(path: Path, site: str, head_file: Path, *, full: bool = True) -> Plan | None:
    """What must happen before the journal opens (None: open it as it is). Moves a
    damaged or emptied file aside. Raises JournalForeign for another site's journal.

    ``full=False``: the tail check when the head file vouches for the journal (module
    docstring); the full check otherwise."""
    return examine_checked(path, site, head_file, full=full)[0]


def examine_checked(
    path: Path, site: str, head_file: Path, *, full: bool = True
) -> tuple[Plan | None, str]:
    """:func:`examine`, and which check it made: ``full`` or ``tail``."""
    checked = "full"
    head, head_problem = read_head(head_file)
    if head is not None and head.site != site:
        head_problem = f"{head_file} belongs to site {head.site!r}"
        head = None
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        size = -1
    wal = path.with_name(path.name + "-wal")
    if size > 0:
        found = _tail(path, site, head) if not full and head is not None else None
        if found is None:
            found = _inspect(path, site)
        else:
            checked = "tail"
        if found.problem is not None:
            kept = move_aside(path, "damaged")
            known = max(found.max_seq, found.last_seq, head.seq if head is not None else 0)
            plan = Plan("journal.damaged", f"journal {path}: {found.problem}", known,
                        found.last_seq, found.last_hash,
                        "journal" if found.last_seq else "genesis", kept, head_problem)  # fmt: skip
            return plan, checked
        if head is not None and head.seq > found.max_seq:
            plan = Plan(
                "journal.lost",
                f"journal {path} ends at seq {found.max_seq} but {head_file} says seq "
                f"{head.seq} was committed: rows {found.max_seq + 1}..{head.seq} are gone "
                "(a deleted -wal file, a restored copy?)",
                head.seq, found.last_seq, found.last_hash, "journal", None, head_problem,
            )  # fmt: skip
            return plan, checked
        return None, checked
    if head is None and head_problem is None:
        return None, checked  # no journal and no head file: the first start
    what = "is empty (zero length)" if size == 0 else "is missing"
    kept = move_aside(path, "lost") if size == 0 or wal.exists() else None
    if head is not None and head.seq > 0:
        plan = Plan(
            "journal.lost",
            f"journal {path} {what}, but {head_file} says seq {head.seq} was committed: "
            f"the events up to seq {head.seq} are not in the new journal",
            head.seq, head.seq, bytes.fromhex(head.hash), "head_file", kept, head_problem,
        )  # fmt: skip
        return plan, checked
    if head is None:
        plan = Plan(
            "journal.lost",
            f"journal {path} {what} and its head file is damaged ({head_problem}): how many "
            "events were lost is unknown; the new journal starts at seq 1",
            0, 0, GENESIS, "genesis", kept, head_problem,
        )  # fmt: skip
        return plan, checked
    return None, checked


def restart_meta(existing: str | None, plan: Plan) -> str:
    """The ``restarts`` meta value with ``plan`` appended."""
    items: list[object] = []
    if existing:
        with contextlib.suppress(ValueError):
            loaded = json.loads(existing)
            if isinstance(loaded, list):
                items = loaded
    items.append(plan.record())
    return json.dumps(items)


def check(path: Path, site: str) -> dict[str, object]:
    """The full check of a journal that a writer may be writing to (read-only, one read
    transaction): ``{"problem": str | None, "last_seq", "max_seq"}``."""
    try:
        found = _inspect(path, site, read_only=True)
    except JournalForeign as exc:
        return {"problem": str(exc), "last_seq": 0, "max_seq": 0}
    return {"problem": found.problem, "last_seq": found.last_seq, "max_seq": found.max_seq}


def main(argv: list[str]) -> int:
    """``python -m gateway.journal._recover PATH SITE``: the full check after start, at a
    lower priority than the gateway; one line of JSON on stdout."""
    with contextlib.suppress(OSError):
        os.nice(10)
    result = check(Path(argv[0]), argv[1])
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
