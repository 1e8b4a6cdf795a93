"""The carelock device model: what a lock or key safe does, without any radio.

A state machine with the clock passed in (``now``, monotonic seconds), so tests drive
it directly and :mod:`simulators.carelock` serves it over the loopback GATT link.

Lock: bolt (locked / unlocked / unlatched / jammed), door contact, auto-relock timer
(relocks N seconds after an unlock, once the door is shut; each closing restarts it),
an unlatch that springs back to unlocked after :data:`UNLATCH_HOLD` seconds.
Key safe: compartment (opens on command, a person shuts it), key-present sensor.
Both: battery (every motor action costs :data:`ACTION_COST` %; a drain fault costs
:data:`DRAIN_RATE` % a second; at 0 % the motor refuses), pairing mode (entered by the
installer, left after one confirmed pairing or :data:`PAIRING_WINDOW` seconds), and faults a
technician switches at run time (:meth:`CarelockDevice.switch`).

Pairing is confirmed on the device: after PAIR_REVEAL the pairing is *pending* — not
usable, not saved — and its six-digit code is on the display (:attr:`pending_code`).
Only a press of the button while the code is shown (:meth:`CarelockDevice.press`
``confirm``) within :data:`~protocols.carelock.CONFIRM_TIMEOUT` seconds stores it and
ends pairing mode; ``reject``, the timeout, the window closing, or the central's link
dropping end it unstored, and pairing mode stays open for another try. One pairing is
pending at a time: another central's request meanwhile is refused. The PAIR_DONE frame
that says how it ended goes to :attr:`CarelockDevice.on_pair_done`.

With a state file the physical state, the battery and the pairings survive a restart
(JSON, written atomically, mode 0600 because it holds pairing keys).
"""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from protocols.carelock import (
    CONFIRM_TIMEOUT,
    CommandBody,
    DevicePairing,
    Kind,
    Opcode,
    PairDone,
    PairDoneReason,
    Result,
    StatusBlock,
)
from protocols.carelock.crypto import Pairing
from protocols.carelock.frames import PairNonce, PairRequest, PairResponse, PairReveal, Status
from protocols.device import CompartmentState, DeviceInfo, DoorState, KeyState, LockState

__all__ = [
    "ACTION_COST",
    "BUTTON",
    "DRAIN_RATE",
    "MAX_PAIRINGS",
    "PAIRING_WINDOW",
    "SWITCHES",
    "UNLATCH_HOLD",
    "CarelockDevice",
    "Faults",
]

ACTION_COST: Final = 0.01
DRAIN_RATE: Final = 1.0
UNLATCH_HOLD: Final = 2.0
PAIRING_WINDOW: Final = 300.0
CRITICAL_LEVEL: Final = 10
MAX_AUTO_RELOCK: Final = 3600
MAX_PAIRINGS: Final = 4

#: technician switches: name → what the value may be
SWITCHES: Final = {
    "pairing": "on|off",
    "refuse-pairing": "on|off",
    "confirm-timeout": "seconds a pairing code waits for `press confirm` (1..3600)",
    "jam": "on|off",
    "battery": "0..100",
    "drain": "on|off",
    "tamper": "on|off: every sealed frame the device sends fails authentication",
    "slow": "milliseconds before each reply (0 = off)",
    "door": "open|close (lock)",
    "turn": "lock|unlock (lock: the thumb-turn inside, turned by hand; no motor)",
    "auto-relock": "seconds, 0 = off (lock)",
    "compartment": "open|close (key safe)",
    "key": "take|return (key safe, compartment open)",
}


#: what the button does while a pairing code is shown (``press confirm|reject``)
BUTTON: Final = "confirm (the code matches the gateway's: store the pairing) | reject"


@dataclass
class _Pending:
    """A revealed pairing waiting for the person at the device; ``link`` is the central's
    connection (its PAIR_DONE goes there)."""

    pairing: Pairing
    until: float
    link: object


@dataclass
class Faults:
    """Run-time faults (not persisted)."""

    jam: bool = False
    drain: bool = False
    refuse_pairing: bool = False
    tamper: bool = False
    slow_ms: int = 0


@dataclass
class _State:
    """What survives a restart."""

    serial: str
    lock: LockState = LockState.LOCKED
    door: DoorState = DoorState.CLOSED
    compartment: CompartmentState = CompartmentState.CLOSED
    key: KeyState = KeyState.PRESENT
    battery: float = 100.0
    auto_relock: int = 0
    pairings: dict[str, str] = field(default_factory=dict)  # key id hex → pair key hex


def _on_off(value: str) -> bool:
    if value in ("on", "1", "true"):
        return True
    if value in ("off", "0", "false"):
        return False
    raise ValueError(f"expected on or off, not {value!r}")


def _int(value: str, low: int, high: int) -> int:
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"expected a number {low}..{high}, not {value!r}") from None
    if not low <= n <= high:
        raise ValueError(f"{n} is outside {low}..{high}")
    return n


class CarelockDevice:
    """One simulated lock or key safe. Listeners hear every change of status or battery."""

    def __init__(
        self,
        kind: Kind,
        *,
        state_file: Path | None = None,
        pairing: bool = False,
        now: float = 0.0,
        max_pairings: int = MAX_PAIRINGS,
        confirm_timeout: float = CONFIRM_TIMEOUT,
    ) -> None:
        self.kind = kind
        #: seconds a pairing waits, its code shown, for the button (then refused)
        self.confirm_timeout = confirm_timeout
        #: pairings the device keeps at most; a pairing beyond is refused (never by
        #: forgetting an older one: a rogue pairing must not push the gateway's out)
        self.max_pairings = max_pairings
        self.state_file = state_file
        self.faults = Faults()
        self._state: _State = (
            self._load()
            if state_file and state_file.exists()
            else _State(serial=f"CL{kind.value}-{secrets.token_hex(4).upper()}")
        )
        self._pairing_until: float | None = now + PAIRING_WINDOW if pairing else None
        self._pending: _Pending | None = None
        #: told (link, PAIR_DONE frame, code) when a pending pairing ends, stored or not
        self.on_pair_done: Callable[[object, bytes, str], None] | None = None
        self._unlatch_until: float | None = None
        self._relock_at: float | None = None
        self._last_tick = now
        self.listeners: list[Callable[[], None]] = []
        self._save()

    # -- what the GATT side reads ---------------------------------------------------------
    @property
    def info(self) -> DeviceInfo:
        model = "CL-LOCK-1" if self.kind is Kind.LOCK else "CL-SAFE-1"
        return DeviceInfo(
            manufacturer="carelock open hardware",
            model=model,
            serial=self._state.serial,
            firmware="1.0.0",
        )

    @property
    def battery(self) -> int:
        return math.ceil(self._state.battery)

    @property
    def pairing_mode(self) -> bool:
        return self._pairing_until is not None

    @property
    def pending_code(self) -> str | None:
        """The six-digit code on the display while a pairing waits for confirmation."""
        return self._pending.pairing.code if self._pending is not None else None

    def status(self) -> StatusBlock:
        s = self._state
        critical = self.battery <= CRITICAL_LEVEL
        if self.kind is Kind.LOCK:
            return StatusBlock(
                Kind.LOCK,
                lock=s.lock,
                door=s.door,
                battery_critical=critical,
                auto_relock=s.auto_relock > 0,
            )
        return StatusBlock(
            Kind.KEYSAFE, compartment=s.compartment, key=s.key, battery_critical=critical
        )

    def key_for(self, key_id: bytes) -> bytes | None:
        hexkey = self._state.pairings.get(key_id.hex())
        return bytes.fromhex(hexkey) if hexkey else None

    # -- what the central asks ------------------------------------------------------------
    def pair(self, request: PairRequest, now: float) -> tuple[bytes, DevicePairing | None]:
        """Answer a pair request with a commitment; only in pairing mode, when pairing is
        not refused and no other pairing waits for confirmation. See :meth:`reveal`."""
        self.tick(now)
        if not self.pairing_mode:
            return PairResponse(Status.NOT_IN_PAIRING_MODE).encode(), None
        if (
            self.faults.refuse_pairing
            or len(self._state.pairings) >= self.max_pairings
            or self._pending is not None
        ):
            return PairResponse(Status.PAIRING_REFUSED).encode(), None
        pending = DevicePairing(request)
        return pending.response(), pending

    def reveal(
        self, pending: DevicePairing, nonce: PairNonce, now: float, link: object = None
    ) -> tuple[bytes, Pairing | None]:
        """The central's nonce for a pairing this device committed to: reveal, and hold
        the pairing pending with its code on the display — if pairing mode is still on
        and no other pairing is pending. Not stored: see :meth:`press`."""
        self.tick(now)
        if not self.pairing_mode:
            return PairReveal(Status.NOT_IN_PAIRING_MODE).encode(), None
        if len(self._state.pairings) >= self.max_pairings or self._pending is not None:
            return PairReveal(Status.PAIRING_REFUSED).encode(), None
        frame, pairing = pending.reveal(nonce)
        until = min(now + self.confirm_timeout, self._pairing_until or now)
        self._pending = _Pending(pairing, until, link)
        return frame, pairing

    def press(self, button: str, now: float) -> str:
        """The person at the device, while a code is shown: ``confirm`` stores the pending
        pairing (and ends pairing mode), ``reject`` throws it away (pairing mode stays
        open). Returns what it did; ValueError when no code is shown."""
        self.tick(now)
        button = button.strip().lower()
        if button not in ("confirm", "reject"):
            raise ValueError(f"the button is pressed to confirm or reject, not {button!r}")
        pending = self._pending
        if pending is None:
            raise ValueError("no pairing code is shown: there is nothing to confirm or reject")
        code = pending.pairing.code
        if button == "reject":
            self._end_pending(PairDoneReason.REJECTED)
            return f"pairing with code {code} rejected"
        if len(self._state.pairings) >= self.max_pairings:
            self._end_pending(PairDoneReason.FULL)
            return f"pairing with code {code} refused: the device holds {self.max_pairings}"
        pairing = pending.pairing
        self._state.pairings[pairing.key_id.hex()] = pairing.pair_key.hex()
        self._pairing_until = None
        self._save()
        self._end_pending(PairDoneReason.STORED)
        return f"pairing with code {code} confirmed and stored"

    def link_lost(self, link: object) -> None:
        """The central whose pairing is pending went away: nobody would hear the outcome."""
        if self._pending is not None and self._pending.link is link:
            self._pending = None

    def _end_pending(self, reason: PairDoneReason) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        frame = PairDone.stored() if reason is PairDoneReason.STORED else PairDone.refused(reason)
        if self.on_pair_done is not None:
            self.on_pair_done(pending.link, frame.encode(), pending.pairing.code)

    def pairing_ids(self) -> list[bytes]:
        """The key ids of the pairings held, oldest first."""
        return [bytes.fromhex(k) for k in self._state.pairings]

    def remove_pairing(self, key_id: bytes) -> bool:
        """Forget one pairing (a central asked over its session); False if unknown."""
        if self._state.pairings.pop(key_id.hex(), None) is None:
            return False
        self._save()
        return True

    def command(self, body: CommandBody, now: float) -> Result:
        self.tick(now)
        with self._change():
            return self._command(body, now)

    def _command(self, body: CommandBody, now: float) -> Result:
        op = body.op
        if op is Opcode.STATUS:
            return Result.OK
        lock_ops = {Opcode.LOCK, Opcode.UNLOCK, Opcode.UNLATCH, Opcode.SET_AUTO_RELOCK}
        if (self.kind is Kind.LOCK) != (op in lock_ops):
            return Result.NOT_SUPPORTED
        if op is Opcode.SET_AUTO_RELOCK:
            if body.arg > MAX_AUTO_RELOCK:
                return Result.BAD_ARGUMENT
            self._state.auto_relock = body.arg
            self._arm_relock(now)
            return Result.OK
        if op is Opcode.LOCK and self._state.door is DoorState.OPEN:
            return Result.DOOR_OPEN
        result = self._motor()
        if result is not Result.OK:
            return result
        s = self._state
        self._unlatch_until = None
        if op is Opcode.LOCK:
            s.lock, self._relock_at = LockState.LOCKED, None
        elif op is Opcode.UNLOCK:
            s.lock = LockState.UNLOCKED
            self._arm_relock(now)
        elif op is Opcode.UNLATCH:
            s.lock, self._relock_at = LockState.UNLATCHED, None
            self._unlatch_until = now + UNLATCH_HOLD
        else:  # OPEN
            s.compartment = CompartmentState.OPEN
        return Result.OK

    def _motor(self) -> Result:
        """One motor movement: costs battery; fails when empty or jammed."""
        if self._state.battery <= 0:
            return Result.BATTERY_EMPTY
        self._state.battery = max(0.0, self._state.battery - ACTION_COST)
        if self.faults.jam:
            if self.kind is Kind.LOCK:
                self._state.lock = LockState.JAMMED
            return Result.JAMMED
        return Result.OK

    def _arm_relock(self, now: float) -> None:
        s = self._state
        unlocked = self.kind is Kind.LOCK and s.lock is LockState.UNLOCKED
        self._relock_at = now + s.auto_relock if unlocked and s.auto_relock > 0 else None

    # -- time -----------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Apply what time does: unlatch spring-back, auto-relock, drain, pairing window."""
        with self._change():
            if self.faults.drain and now > self._last_tick:
                self._state.battery = max(
                    0.0, self._state.battery - DRAIN_RATE * (now - self._last_tick)
                )
            self._last_tick = max(now, self._last_tick)
            if self._pending is not None and now >= self._pending.until:
                closing = self._pairing_until is not None and now >= self._pairing_until
                self._end_pending(
                    PairDoneReason.WINDOW_CLOSED if closing else PairDoneReason.TIMED_OUT
                )
            if self._pairing_until is not None and now >= self._pairing_until:
                self._pairing_until = None
            if self._unlatch_until is not None and now >= self._unlatch_until:
                self._unlatch_until = None
                self._state.lock = LockState.UNLOCKED
                self._arm_relock(now)
            if (
                self._relock_at is not None
                and now >= self._relock_at
                and self._state.door is DoorState.CLOSED
            ):
                self._relock_at = None
                if self._motor() is Result.OK:
                    self._state.lock = LockState.LOCKED

    # -- the technician's switches ----------------------------------------------------------
    def switch(self, name: str, value: str, now: float) -> str:
        """Set one switch (see :data:`SWITCHES`); returns what it did, in words.
        Raises ValueError with a message a technician reads."""
        self.tick(now)
        with self._change():
            return self._switch(name, value.strip().lower(), now)

    def _switch(self, name: str, value: str, now: float) -> str:
        s, f = self._state, self.faults
        lock_only = {"door", "auto-relock", "turn"}
        safe_only = {"compartment", "key"}
        if name not in SWITCHES:
            raise ValueError(f"unknown switch {name!r}; known: {', '.join(SWITCHES)}")
        if (name in lock_only and self.kind is not Kind.LOCK) or (
            name in safe_only and self.kind is not Kind.KEYSAFE
        ):
            raise ValueError(f"a {self.kind.name.lower()} has no {name!r}")
        if name == "pairing":
            self._pairing_until = now + PAIRING_WINDOW if _on_off(value) else None
            if self._pairing_until is None:
                self._end_pending(PairDoneReason.WINDOW_CLOSED)
        elif name == "refuse-pairing":
            f.refuse_pairing = _on_off(value)
        elif name == "confirm-timeout":
            self.confirm_timeout = float(_int(value, 1, 3600))
        elif name == "jam":
            f.jam = _on_off(value)
        elif name == "drain":
            f.drain = _on_off(value)
        elif name == "tamper":
            f.tamper = _on_off(value)
        elif name == "slow":
            f.slow_ms = _int(value, 0, 60_000)
        elif name == "battery":
            s.battery = float(_int(value, 0, 100))
        elif name == "auto-relock":
            s.auto_relock = _int(value, 0, MAX_AUTO_RELOCK)
            self._arm_relock(now)
        elif name == "door":
            if value not in ("open", "close", "closed"):
                raise ValueError("door is open or close")
            s.door = DoorState.OPEN if value == "open" else DoorState.CLOSED
            if s.door is DoorState.CLOSED:
                self._arm_relock(now)
        elif name == "turn":
            if value not in ("lock", "unlock"):
                raise ValueError("turn is lock or unlock")
            if value == "lock":
                s.lock, self._relock_at = LockState.LOCKED, None
            else:
                s.lock = LockState.UNLOCKED
                self._arm_relock(now)
            self._unlatch_until = None
        elif name == "compartment":
            if value not in ("open", "close", "closed"):
                raise ValueError("compartment is open or close")
            s.compartment = CompartmentState.OPEN if value == "open" else CompartmentState.CLOSED
        elif name == "key":
            if value not in ("take", "return"):
                raise ValueError("key is take or return")
            if s.compartment is not CompartmentState.OPEN:
                raise ValueError(
                    "the compartment is closed: open it before taking or returning the key"
                )
            s.key = KeyState.ABSENT if value == "take" else KeyState.PRESENT
        return f"{name} = {value}"

    # -- change tracking and persistence ----------------------------------------------------
    def _change(self) -> _Change:
        return _Change(self)

    def _save(self) -> None:
        if self.state_file is None:
            return
        s = self._state
        data = {
            "kind": self.kind.name.lower(),
            "serial": s.serial,
            "lock": s.lock.value,
            "door": s.door.value,
            "compartment": s.compartment.value,
            "key": s.key.value,
            "battery": s.battery,
            "auto_relock": s.auto_relock,
            "pairings": s.pairings,
        }
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1)
        os.replace(tmp, self.state_file)

    def _load(self) -> _State:
        assert self.state_file is not None
        try:
            d: dict[str, Any] = json.loads(self.state_file.read_text())
            if d["kind"] != self.kind.name.lower():
                raise ValueError(f"it holds a {d['kind']}, not a {self.kind.name.lower()}")
            return _State(
                serial=str(d["serial"]),
                lock=LockState(d["lock"]),
                door=DoorState(d["door"]),
                compartment=CompartmentState(d["compartment"]),
                key=KeyState(d["key"]),
                battery=float(d["battery"]),
                auto_relock=int(d["auto_relock"]),
                pairings={str(k): str(v) for k, v in d["pairings"].items()},
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(
                f"state file {self.state_file} is unusable ({exc}); move it away to start fresh"
            ) from None


class _Change:
    """Compares status and battery around a change; saves and tells listeners if different."""

    def __init__(self, device: CarelockDevice) -> None:
        self._device = device
        self._before = (device.status(), device.battery)

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        d = self._device
        if (d.status(), d.battery) != self._before:
            d._save()
            for listener in list(d.listeners):
                listener()
