"""What the access decision keeps on disk, under ``<data_dir>/access/``, and what it
does when a file is missing or damaged.

================  ==============================================================
file              holds
================  ==============================================================
time_floor.json   the latest time the gateway knows has passed (the time floor)
revocations.json  per issuer: the held list's seq, iat, when received, cti, sub;
                  and the issuers whose list was lost and is awaited again
rosters.json      per issuer: the held roster (signed bytes); and the issuers whose
                  roster was lost and is awaited again
names.json        the names rosters gave carers (for the resident's views)
commands.json     request ids of verified commands, until they expire (no replay);
                  and, after a loss, the ``exp`` below which commands are refused
alarm.json        whether an alarm is raised for the site, since when, until when
held/<cti>.cwt    tokens the platform sent for presentation by ``cti`` (each is
                  signed by its issuer: the signature is its checksum)
================  ==============================================================

Every JSON file is written atomically (temporary file, fsync, rename, fsync of the
directory) as ``{"lockgw_state": 1, "sha256": <hex>, "data": <value>}``, the checksum
over the canonical JSON of ``data``: a torn write, a truncated or edited file and
bit rot are told from a good file. (A file of the older form, plain ``data`` without
the envelope, is still read: the next write puts it in the new form.)

**Missing or damaged.** :meth:`StateDir.read` says which. A damaged file is kept
aside as ``<name>.corrupt`` (evidence) and reported. A *missing* file is a loss,
not a first start, once the journal holds events (:class:`StateHistory`): the
gateway writes every state file at its first start, so from then on a missing
file was deleted (or lost with a damaged card). On a loss each owner falls back
to the safe side (``gateway.access.controller``, ``docs/credentials.md``) and
records a :class:`StateFallback` for health and the ``state.fallback`` event —
it never starts empty as if nothing had been there.

A write that fails (disk full) is logged and counted; the gateway keeps deciding
from memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import structlog

__all__ = [
    "Loaded",
    "StateDir",
    "StateFallback",
    "StateHistory",
    "checksum",
    "read_state_file",
    "wrap",
]

log = structlog.get_logger("lockgw.access")

#: the envelope's version key; its presence tells the checksummed form from the older one
_MARK: Final = "lockgw_state"
#: a state file larger than this is damaged (the largest, revocations.json, holds at most
#: 10,000 entries per issuer: well under this)
MAX_STATE_BYTES: Final = 64 * 1024 * 1024


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def checksum(value: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of ``value``."""
    return hashlib.sha256(_canonical(value)).hexdigest()


def wrap(value: Any) -> bytes:
    """The bytes of a state file holding ``value``: the checksummed envelope."""
    return json.dumps(
        {_MARK: 1, "sha256": checksum(value), "data": value}, sort_keys=True
    ).encode()


@dataclass(frozen=True, slots=True)
class Loaded:
    """What :meth:`StateDir.read` found: ``value`` when ``problem`` is None."""

    value: Any = None
    #: None: read and verified; "missing": no file; "damaged": unreadable or wrong checksum
    problem: Literal["missing", "damaged"] | None = None
    detail: str = ""
    #: where a damaged file was set aside
    kept_as: str | None = None


@dataclass(frozen=True, slots=True)
class StateHistory:
    """What the journal says about the past, for telling a first start from a loss and
    for rebuilding what can be rebuilt. Built by the daemon from its journal
    (``gateway.app``) before the access state is opened."""

    #: the journal holds events: this is not the first start
    has_events: bool = False
    #: the journal holds every event since seq 1 (no retention cut, no new journal)
    complete: bool = True
    #: wall-clock time (s) of the newest journaled event
    newest_ts: float | None = None
    #: per issuer: the newest ``list_seq`` of its journaled ``revocation.applied``
    revocation_seqs: dict[str, int] = field(default_factory=dict)
    #: per issuer: the newest ``list_seq`` of its journaled ``roster.applied``
    roster_seqs: dict[str, int] = field(default_factory=dict)
    #: the newest ``alarm.raised`` / ``alarm.cleared``: (raised, its time)
    alarm: tuple[bool, float] | None = None

    @classmethod
    def unknown(cls) -> StateHistory:
        """The journal could not be read: assume the worst (files existed, history cut)."""
        return cls(has_events=True, complete=False)


@dataclass
class StateFallback:
    """One state file found missing or damaged at start, and the safe side taken."""

    file: str
    problem: Literal["missing", "damaged"]
    #: what the gateway does instead, in words an installer reads
    fallback: str
    at: float
    kept_as: str | None = None
    detail: str = ""
    issuers: list[str] = field(default_factory=list)
    until: float | None = None
    #: the safe side still restricts something (set by ``AccessController.state_notices``)
    in_force: bool = False


def read_state_file(root: Path, name: str) -> Any:
    """A state file as another process reads it (the command line, while the daemon
    runs): nothing is moved or written; None when it is missing, cannot be read or
    fails its checksum."""
    try:
        fd = os.open(root / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    if not _is_regular(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            doc = json.loads(f.read(MAX_STATE_BYTES + 1))
    except (OSError, ValueError):
        return None
    if isinstance(doc, dict) and _MARK in doc:
        data = doc.get("data")
        return data if doc.get("sha256") == checksum(data) else None
    return doc  # the older form, without checksum


@dataclass
class StateDir:
    root: Path
    write_failures: int = 0
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.root / "held").mkdir(parents=True, exist_ok=True, mode=0o700)

    @property
    def held_dir(self) -> Path:
        return self.root / "held"

    def set_aside(self, path: Path) -> str | None:
        """Move a damaged file out of the way (kept for forensics); its new name."""
        aside = path.with_name(path.name + ".corrupt")
        try:
            os.replace(path, aside)
        except OSError:
            return None
        return str(aside)

    def read(self, name: str) -> Loaded:
        """Read and verify one state file. A damaged one is set aside and reported."""
        path = self.root / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return Loaded(problem="missing", detail=f"{path} does not exist")
        except OSError as exc:
            return self._damaged(path, f"cannot be opened ({exc.strerror})")
        if not _is_regular(os.fstat(fd).st_mode):
            os.close(fd)
            return self._damaged(path, "is not a regular file")
        try:
            with os.fdopen(fd, "rb") as f:
                raw = f.read(MAX_STATE_BYTES + 1)
        except OSError as exc:
            return self._damaged(path, f"cannot be read ({exc.strerror})")
        if len(raw) > MAX_STATE_BYTES:
            return self._damaged(path, f"is larger than {MAX_STATE_BYTES} bytes")
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            what = "is empty" if not raw.strip() else f"is not valid JSON ({exc})"
            return self._damaged(path, what)
        if isinstance(doc, dict) and _MARK in doc:
            if doc.get(_MARK) != 1 or "data" not in doc or not isinstance(doc.get("sha256"), str):
                return self._damaged(path, "has an unknown layout")
            if checksum(doc["data"]) != doc["sha256"]:
                return self._damaged(path, "fails its checksum (changed or partly written)")
            return Loaded(doc["data"])
        return Loaded(doc)  # the older form, without checksum

    def damaged(self, name: str, what: str) -> Loaded:
        """Report ``name`` as damaged (its content verified but unusable) and set it aside."""
        return self._damaged(self.root / name, what)

    def _damaged(self, path: Path, what: str) -> Loaded:
        kept = self.set_aside(path)
        detail = f"{path} {what}"
        self.problems.append(f"{detail}; kept as {kept}" if kept else detail)
        log.error("access.state_damaged", file=str(path), problem=what, kept_as=kept)
        return Loaded(problem="damaged", detail=detail, kept_as=kept)

    def load(self, name: str) -> Any:
        """The value of a state file, or None when it is missing or damaged."""
        return self.read(name).value

    def write_bytes(self, path: Path, data: bytes) -> bool:
        tmp = path.with_name(path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o600)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except OSError as exc:
            self.write_failures += 1
            log.error("access.state_write_failed", file=str(path), error=str(exc))
            with contextlib.suppress(OSError):
                tmp.unlink()
            return False
        return True

    def save(self, name: str, value: Any) -> bool:
        return self.write_bytes(self.root / name, wrap(value))


def _is_regular(mode: int) -> bool:
    return stat.S_ISREG(mode)


def _fsync_dir(path: Path) -> None:
    """The rename itself survives a power cut once the directory is synced."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
