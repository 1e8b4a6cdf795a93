"""Device-level values shared by drivers, the gateway and (as plain data) simulators.

A driver reports a :class:`DeviceState` snapshot after every action, refresh and
notification; the gateway compares snapshots to produce events.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from protocols.events import DoorState, LockState

__all__ = [
    "Action",
    "Capability",
    "CompartmentState",
    "DeviceInfo",
    "DeviceKind",
    "DeviceState",
    "DoorState",
    "KeyState",
    "LockState",
]


class DeviceKind(StrEnum):
    LOCK = "lock"
    KEYSAFE = "keysafe"


class Action(StrEnum):
    """What can be asked of a device (CONTRACT §3 actions plus ``lock``)."""

    LOCK = "lock"
    UNLOCK = "unlock"
    UNLATCH = "unlatch"
    OPEN = "open"  # key-safe compartment


class Capability(StrEnum):
    LOCK = "lock"
    UNLOCK = "unlock"
    UNLATCH = "unlatch"
    OPEN = "open"
    DOOR_SENSOR = "door_sensor"
    KEY_SENSOR = "key_sensor"
    BATTERY = "battery"
    AUTO_RELOCK = "auto_relock"


class CompartmentState(StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    UNKNOWN = "unknown"


class KeyState(StrEnum):
    PRESENT = "present"
    ABSENT = "absent"
    UNKNOWN = "unknown"


class DeviceInfo(BaseModel):
    """For the installed base (inventory): what the device says it is."""

    model_config = ConfigDict(frozen=True)

    manufacturer: str = "unknown"
    model: str = "unknown"
    serial: str = "unknown"
    firmware: str = "unknown"


class DeviceState(BaseModel):
    """One snapshot of a device. Fields a device kind does not have stay ``None``."""

    model_config = ConfigDict(frozen=True)

    kind: DeviceKind
    lock: LockState | None = None
    door: DoorState = DoorState.UNKNOWN
    compartment: CompartmentState | None = None
    key: KeyState | None = None
    battery: int | None = Field(default=None, ge=0, le=100)
    #: True when the device itself reports a critical battery (some devices send only a flag)
    battery_critical: bool = False
