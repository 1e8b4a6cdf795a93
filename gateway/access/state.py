"""What the access decision keeps on disk, under ``<data_dir>/access/``.

================  ==============================================================
file              holds
================  ==============================================================
time_floor.json   the latest time the gateway knows has passed (the time floor)
revocations.json  per issuer: the held list's seq, iat, when received, cti, sub
commands.json     request ids of verified commands, until they expire (no replay)
alarm.json        whether an alarm is raised for the site, since when, until when
held/<cti>.cwt    tokens the platform sent for presentation by ``cti``
================  ==============================================================

Every write is atomic (temporary file, fsync, rename). A file that is missing starts
empty; a file that cannot be read is reported and kept aside as ``*.corrupt`` so
nobody loses evidence. A write that fails (disk full) is logged and counted; the
gateway keeps deciding from memory.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

__all__ = ["StateDir", "read_state_file"]

log = structlog.get_logger("lockgw.access")


def read_state_file(root: Path, name: str) -> Any:
    """A state file as another process reads it (the command line, while the daemon
    runs): nothing is moved or written; None when it is missing or cannot be read."""
    try:
        return json.loads((root / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@dataclass
class StateDir:
    root: Path
    write_failures: int = 0
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        (self.root / "held").mkdir(parents=True, exist_ok=True, mode=0o700)

    @property
    def held_dir(self) -> Path:
        return self.root / "held"

    def load(self, name: str) -> Any:
        path = self.root / name
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            problem = f"{path}: cannot be read ({exc}); starting without it"
            self.problems.append(problem)
            log.error("access.state_unreadable", file=str(path), error=str(exc))
            with contextlib.suppress(OSError):
                os.replace(path, path.with_suffix(".corrupt"))
            return None

    def write_bytes(self, path: Path, data: bytes) -> bool:
        tmp = path.with_name(path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            self.write_failures += 1
            log.error("access.state_write_failed", file=str(path), error=str(exc))
            return False
        return True

    def save(self, name: str, value: Any) -> bool:
        return self.write_bytes(self.root / name, json.dumps(value, sort_keys=True).encode())
