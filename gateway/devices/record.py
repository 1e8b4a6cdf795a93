"""What the gateway remembers about each device, and the snapshot file that keeps it.

:class:`DeviceRecord` is one device's health and identity: connected, last contact,
battery and its trend, last error, the last state, what the device says it is.
The daemon writes every record to ``<data_dir>/devices/state.json`` (atomically,
at most a few times a second, only on change) so a restart knows the installed base
and its last state, and ``lockgw devices`` can show it without touching a device.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from protocols.device import DeviceInfo, DeviceKind, DeviceState

__all__ = ["DeviceRecord", "StateFile", "describe_state", "iso"]

SNAPSHOT_VERSION = 1


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class DeviceRecord(BaseModel):
    """One device as the gateway knows it (a value: supervisors publish new copies)."""

    model_config = ConfigDict(frozen=True)

    id: str
    door: str
    driver: str
    address: str
    kind: DeviceKind | None = None
    info: DeviceInfo | None = None
    paired_at: str | None = None
    #: None until the gateway has tried to reach it since it started
    online: bool | None = None
    connected: bool = False
    #: seconds since the epoch of the last answer from the device
    last_contact: float | None = None
    state: DeviceState | None = None
    battery: int | None = None
    battery_status: str | None = Field(default=None, description="ok | low | critical")
    days_left: float | None = None
    battery_samples: list[list[float]] = Field(default_factory=list)
    #: the last problem in words (cleared when the device answers again)
    error: str | None = None
    #: key ids of the pairings the device held when last listed (None: never listed, or
    #: its driver cannot list them)
    pairings: list[str] | None = None
    #: of those, the ones this gateway did not make (a warning until removed)
    unknown_pairings: list[str] = Field(default_factory=list)

    def inventory(self) -> dict[str, Any]:
        """The CONTRACT §4 inventory item, plus state, battery and last seen."""
        info = self.info or DeviceInfo()
        return {
            "id": self.id,
            "door": self.door,
            "driver": self.driver,
            "kind": self.kind.value if self.kind else None,
            "address": self.address,
            "manufacturer": info.manufacturer,
            "model": info.model,
            "serial": info.serial,
            "firmware": info.firmware,
            "paired_at": self.paired_at,
            "online": self.online,
            "state": self.state.model_dump(mode="json") if self.state else None,
            "battery": self.battery,
            "battery_status": self.battery_status,
            "days_left": self.days_left,
            "last_seen": iso(self.last_contact),
            "error": self.error,
        }


def describe_state(state: DeviceState | None) -> str:
    """A short phrase for people: ``locked, door closed`` / ``closed, key present``."""
    if state is None:
        return "unknown"
    if state.kind is DeviceKind.LOCK:
        lock = state.lock.value if state.lock else "unknown"
        return f"{lock}, door {state.door.value}"
    comp = state.compartment.value if state.compartment else "unknown"
    key = state.key.value if state.key else "unknown"
    return f"compartment {comp}, key {key}"


class StateFile:
    """``<data_dir>/devices/state.json``: read at start, rewritten on change."""

    def __init__(self, data_dir: Path | str) -> None:
        self.path = Path(data_dir) / "devices" / "state.json"

    def read(self) -> tuple[float | None, dict[str, DeviceRecord]]:
        """(written_at, records by id); empty when missing or unreadable (a fresh start)."""
        try:
            doc = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            return None, {}
        out: dict[str, DeviceRecord] = {}
        if not isinstance(doc, dict) or doc.get("v") != SNAPSHOT_VERSION:
            return None, {}
        for raw in doc.get("devices", []):
            with contextlib.suppress(ValidationError):
                rec = DeviceRecord.model_validate(raw)
                out[rec.id] = rec
        written = doc.get("written_at")
        return (float(written) if isinstance(written, int | float) else None), out

    def write(self, records: list[DeviceRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        doc = {
            "v": SNAPSHOT_VERSION,
            "written_at": time.time(),
            "pid": os.getpid(),
            "devices": [r.model_dump(mode="json") for r in records],
        }
        tmp = self.path.with_name(f".state.json.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
