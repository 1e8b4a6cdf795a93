"""Who may see the resident's page: one-time links that become sessions.

``lockgw resident-link`` makes a link (a 256-bit random secret in the address, valid
once and for a limited time, 24 hours by default); opening it and pressing "Log in"
turns it into a session (another 256-bit secret, in an HttpOnly, SameSite=Strict
cookie, valid ``[web] session_days``). ``lockgw resident-link --revoke-all`` ends every
session and every unused link. There is no other way in: no passwords, no accounts.

The command line and the daemon share this state in ``<data_dir>/web/access.json``
(directory 0700, file 0600): only SHA-256 digests of the secrets are stored, so the
file does not let anyone in. Every change is a read-modify-write under an exclusive
``flock`` on ``<data_dir>/web/.lock`` and an atomic replace; every method is
synchronous (the daemon calls them on a worker thread, never on its event loop).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

__all__ = ["ResidentAccess", "Session"]

DIR: Final = "web"
FILE: Final = "access.json"
#: links and sessions kept at most (the oldest go first)
MAX_ENTRIES: Final = 200


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Session:
    label: str
    created: float
    expires: float


class ResidentAccess:
    def __init__(self, data_dir: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.dir = Path(data_dir) / DIR
        self.path = self.dir / FILE
        self._clock = clock
        self._cache: tuple[tuple[int, int, int], dict[str, Any]] | None = None

    # -- the file ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _read(self) -> dict[str, Any]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return {"links": {}, "sessions": {}}
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        data: dict[str, Any]
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(raw.get("links"), dict) or not isinstance(raw.get("sessions"), dict):
                raise ValueError("not a resident access file")
            data = raw
        except (OSError, ValueError, AttributeError):
            # unreadable: nobody gets in until a new link is made (fail closed)
            data = {"links": {}, "sessions": {}}
        self._cache = (key, data)
        return data

    def _write(self, data: dict[str, Any]) -> None:
        now = self._clock()
        for kind in ("links", "sessions"):
            entries = {k: v for k, v in data[kind].items() if v["expires"] > now}
            if len(entries) > MAX_ENTRIES:
                keep = sorted(entries, key=lambda k: entries[k]["created"])[-MAX_ENTRIES:]
                entries = {k: entries[k] for k in keep}
            data[kind] = entries
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"v": 1, **data}, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._cache = None

    # -- links ---------------------------------------------------------------------------------
    def new_link(self, valid_for: float, label: str = "") -> str:
        """A new one-time link secret, valid ``valid_for`` seconds."""
        secret = secrets.token_urlsafe(32)
        now = self._clock()
        with self._locked():
            data = self._read()
            data = {"links": dict(data["links"]), "sessions": dict(data["sessions"])}
            data["links"][_digest(secret)] = {
                "label": label,
                "created": now,
                "expires": now + valid_for,
            }
            self._write(data)
        return secret

    def redeem(self, link: str, session_for: float) -> str | None:
        """Spend a link: a new session secret, or None (unknown, used or expired)."""
        now = self._clock()
        with self._locked():
            data = self._read()
            entry = data["links"].get(_digest(link))
            if entry is None or entry["expires"] <= now:
                return None
            data = {"links": dict(data["links"]), "sessions": dict(data["sessions"])}
            del data["links"][_digest(link)]
            secret = secrets.token_urlsafe(32)
            data["sessions"][_digest(secret)] = {
                "label": entry.get("label", ""),
                "created": now,
                "expires": now + session_for,
            }
            self._write(data)
        return secret

    def session(self, secret: str) -> Session | None:
        """The session a cookie's secret names, while it lasts."""
        entry = self._read()["sessions"].get(_digest(secret))
        if entry is None or entry["expires"] <= self._clock():
            return None
        return Session(entry.get("label", ""), entry["created"], entry["expires"])

    def revoke_all(self) -> tuple[int, int]:
        """End every session and every unused link; returns (sessions, links) ended."""
        now = self._clock()
        with self._locked():
            data = self._read()
            counts = tuple(
                sum(1 for v in data[k].values() if v["expires"] > now)
                for k in ("sessions", "links")
            )
            self._write({"links": {}, "sessions": {}})
        return counts[0], counts[1]

    def counts(self) -> tuple[int, int]:
        """(live sessions, unused links)."""
        now = self._clock()
        data = self._read()
        return tuple(  # type: ignore[return-value]
            sum(1 for v in data[k].values() if v["expires"] > now) for k in ("sessions", "links")
        )
