"""The daemon's account of itself (:class:`Snapshot`), as written to ``health.json`` and
answered on ``health.sock``: facts only; :mod:`gateway.health._reasons` judges them."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = [
    "SNAPSHOT_NAME",
    "SOCKET_NAME",
    "DeviceHealth",
    "HeldExpiry",
    "IssuerHealth",
    "PhoneBleHealth",
    "PhonePressure",
    "Snapshot",
    "StateNotice",
    "pid_alive",
    "read_snapshot",
    "running_daemon",
]

SNAPSHOT_NAME = "health.json"
SOCKET_NAME = "health.sock"


class PhoneBleHealth(BaseModel):
    """The BLE phone link (``[phone_link] ble``): advertising on its adapter or not."""

    model_config = ConfigDict(frozen=True)

    adapter: str
    up: bool
    #: why it is down, in words
    problem: str | None = None
    #: centrals in an exchange now; exchanges completed since start
    sessions: int = 0
    served: int = 0


class DeviceHealth(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    door: str
    online: bool
    last_contact: float | None
    battery: int | None
    health_interval: float
    #: why it is offline or failing, in words (e.g. damaged pairing keys: pair again)
    error: str | None = None
    #: False until the device first answered since the gateway started
    reached: bool = True
    #: what is wrong right now (lock_jammed, left_unlocked, door_left_open, key_not_returned)
    problems: list[str] = []
    #: pairings on the device that this gateway did not make (key ids, hex)
    unknown_pairings: list[str] = []


class StateNotice(BaseModel):
    """A state file found missing or damaged at start, and the safe side taken."""

    model_config = ConfigDict(frozen=True)

    file: str
    problem: str
    at: float
    fallback: str
    in_force: bool
    kept_as: str | None = None
    #: revocations.json / rosters.json: the issuers whose planned care still waits for
    #: their list / roster
    issuers: list[str] = []
    #: commands.json: commands expiring before this time are refused
    until: float | None = None


class IssuerHealth(BaseModel):
    """One configured issuer: its revocation list's freshness and the resident's consent."""

    model_config = ConfigDict(frozen=True)

    id: str
    #: the organisation's name as people know it
    name: str
    #: ``revocation_max_age`` (None: freshness not required)
    max_age: int | None = None
    #: the newest list held: its seq and age (None: none held)
    seq: int | None = None
    age: float | None = None
    #: planned care refused now (``revocation_stale``): too old, none yet, or lost
    stale: bool = False
    consent_from: date | None = None
    consent_until: date | None = None
    #: ``key_valid_until``: the last day the organisation's key is trusted
    key_valid_until: date | None = None


class PhonePressure(BaseModel):
    """The phone link is flooded: pending connections were closed to make room."""

    model_config = ConfigDict(frozen=True)

    #: connections closed over the current and the last whole interval, and their sources
    closed: int
    sources: int
    interval: float


class HeldExpiry(BaseModel):
    """A person's newest token the site knows of (held here, or on the organisation's
    roster) that expires soon."""

    model_config = ConfigDict(frozen=True)

    iss: str
    sub: str
    exp: float


class JournalRestartNotice(BaseModel):
    """The journal was found damaged or lost when the gateway started, and a new one
    continues the chain (``gateway.journal._recover``)."""

    model_config = ConfigDict(frozen=True)

    kind: str
    problem: str
    seq: int
    link_seq: int
    kept_as: str | None = None


class Snapshot(BaseModel):
    model_config = ConfigDict(frozen=True)

    written_at: float
    interval: float
    pid: int
    version: str
    started_at: float
    #: ``starting`` until every part is up (doors cannot be opened by phone yet)
    phase: Literal["starting", "running"] = "running"
    clock_trusted: bool = True
    time_floor: float | None = None
    #: ``access.untrusted_clock_allows``: what still opens while the clock is untrusted
    clock_allows: Literal["none", "emergency", "all"] = "emergency"
    broker_connected: bool = False
    #: the [mqtt] config cannot be used: the link was not started (why, in words)
    broker_problem: str | None = None
    journal_ok: bool = True
    journal_failures: int = 0
    last_seq: int = 0
    backlog: int = 0
    devices: list[DeviceHealth] = []
    phones_served: int = 0
    #: ``ok`` / ``fallback`` / ``unrecorded`` (``gateway.journal.Journal.recording``)
    journal_recording: str = "ok"
    #: events waiting in the fallback for the journal; of those, kept in memory only
    journal_held: int = 0
    journal_not_durable: int = 0
    #: why the journal cannot write, in words (None when it can)
    journal_problem: str | None = None
    #: the journal was found damaged or lost at this start and started again
    #: (``journal.damaged`` / ``journal.lost``)
    journal_restarts: list[JournalRestartNotice] = []
    #: the journal's head could not be signed lately (why, in words; None: it could)
    head_not_signed: str | None = None
    state: list[StateNotice] = []
    state_write_failures: int = 0
    #: the site's IANA time zone (consent days are the site's days)
    timezone: str = "Europe/Amsterdam"
    issuers: list[IssuerHealth] = []
    held_expiring: list[HeldExpiry] = []
    #: ``[health] warn_days``: warn this many days before consent ends
    warn_days: int = 14
    #: snapshot writes that failed since start (a full disk: ask the daemon instead)
    write_failures: int = 0
    #: issuer id → why its key file cannot be used (its carers hear issuer_unavailable)
    issuers_unavailable: dict[str, str] = {}
    #: the same for command signers (their commands are refused)
    signers_unavailable: dict[str, str] = {}
    #: None: the BLE phone link is off (``[phone_link] ble = false``)
    phone_ble: PhoneBleHealth | None = None
    #: the phone link closed pending connections to make room lately (a flood)
    phone_link_pressure: PhonePressure | None = None


def read_snapshot(data_dir: Path) -> Snapshot | None:
    try:
        return Snapshot.model_validate_json((data_dir / SNAPSHOT_NAME).read_bytes())
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user (the lockgw service user)
        return True
    return True


def running_daemon(data_dir: Path) -> int | None:
    """The pid of a gateway daemon running on ``data_dir`` (from its snapshot), or None.
    Installer commands that talk to devices directly refuse while it runs: a BLE
    device takes one connection, and the journal has one writer."""
    snap = read_snapshot(data_dir)
    pid = snap.pid if snap is not None else None
    if not pid or pid == os.getpid():
        return None
    return pid if pid_alive(pid) else None
