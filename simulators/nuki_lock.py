"""A simulated Nuki Smart Lock (3.0-like): the lock side of the Nuki BLE protocol, no I/O.

:class:`NukiLock` holds what the lock keeps (key pair, authorizations, lock and door
state, battery); :meth:`NukiLock.session` gives one BLE connection's
:class:`NukiSession`, which turns each GATT write into the notifications the lock sends
back (:class:`Outgoing`). ``simulators/nuki.py`` serves it over the loopback GATT server.

Refusals use Nuki's error codes: a bad CRC ``ERROR_BAD_CRC``, a wrong length
``ERROR_BAD_LENGTH``, an unknown authorization or a frame that does not decrypt
``K_ERROR_NOT_AUTHORIZED``, a challenge nonce that was not issued or is used twice — or
a replayed encrypted frame — ``K_ERROR_BAD_NONCE``, a jammed motor
``K_ERROR_MOTOR_BLOCKED``. An error the lock cannot encrypt (it does not know the key)
goes out unencrypted on the pairing GDIO characteristic; every other answer to an
encrypted request is encrypted on USDIO.
"""

from __future__ import annotations

import json
import os
import secrets
import struct
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from protocols.nuki import (
    PAIRING_GDIO,
    USDIO,
    ActionTrigger,
    AuthorizationData,
    AuthorizationId,
    AuthorizationIdConfirmation,
    BatteryReport,
    ClientType,
    Command,
    CompletionStatus,
    Config,
    DoorSensorState,
    ErrorCode,
    ErrorReport,
    KeyPair,
    KeyturnerStates,
    LockAction,
    LockActionRequest,
    LockState,
    Message,
    NukiFrameError,
    NukiState,
    RequestConfig,
    RequestData,
    Status,
    StatusCode,
    authenticator,
    battery_byte,
    decode_plain,
    encode_encrypted,
    encode_plain,
    open_envelope,
    parse_envelope,
    shared_key,
    verify_authenticator,
)

__all__ = ["Authorization", "NukiLock", "NukiSession", "Outgoing"]

MAX_USERS: Final = 100
#: how many encrypted-frame nonces per authorization the lock remembers to refuse replays
NONCE_MEMORY: Final = 1024

_RESULT: Final = {
    LockAction.UNLOCK: (LockState.UNLOCKING, LockState.UNLOCKED),
    LockAction.LOCK: (LockState.LOCKING, LockState.LOCKED),
    LockAction.UNLATCH: (LockState.UNLATCHING, LockState.UNLATCHED),
    LockAction.LOCK_N_GO: (LockState.LOCKING, LockState.LOCKED),
    LockAction.LOCK_N_GO_UNLATCH: (LockState.UNLATCHING, LockState.LOCKED),
    LockAction.FULL_LOCK: (LockState.LOCKING, LockState.LOCKED),
}


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One notification (indication) the lock sends. ``motor``: the motor runs before it."""

    char: str
    data: bytes
    motor: bool = False


@dataclass(slots=True)
class Authorization:
    auth_id: bytes
    key: bytes
    name: str
    app_id: int
    id_type: ClientType
    challenge: bytes | None = None
    seen_nonces: deque[bytes] = field(default_factory=lambda: deque(maxlen=NONCE_MEMORY))


class NukiLock:
    """The lock's memory. ``state_file`` (JSON, mode 0600) keeps it across restarts."""

    def __init__(
        self,
        *,
        name: str = "Nuki_SIM",
        pairing: bool = False,
        state_file: Path | None = None,
        firmware: tuple[int, int, int] = (3, 9, 8),
    ) -> None:
        self.state_file = state_file
        self.name = name
        self.firmware = firmware
        self.hardware = (4, 1)
        self.keypair = KeyPair.generate()
        self.nuki_id = secrets.randbits(32)
        self.pairing_mode = pairing
        self.authorizations: dict[bytes, Authorization] = {}
        self.next_auth_id = 1
        self.lock_state = LockState.LOCKED
        self.door = DoorSensorState.DOOR_CLOSED
        self.battery_percent = 84
        self.battery_critical = False
        self.jammed = False
        self.last_action = LockAction.NONE
        self.last_completion = CompletionStatus.SUCCESS
        self.config_update_count = 0
        #: the "state changed" bit of the lock's iBeacon: set by a change, cleared by a read
        self.changed = False
        #: the motor is turning (the serving layer sets and clears it): actions get K_ERROR_BUSY
        self.busy = False
        self.sessions: set[NukiSession] = set()
        if state_file is not None and state_file.exists():
            self._load(state_file)

    # -- persistence -----------------------------------------------------------------------
    def _load(self, path: Path) -> None:
        raw: dict[str, Any] = json.loads(path.read_text())
        self.keypair = KeyPair.from_secret(bytes.fromhex(raw["secret"]))
        self.nuki_id = int(raw["nuki_id"])
        self.name = str(raw["name"])
        self.next_auth_id = int(raw["next_auth_id"])
        self.lock_state = LockState(raw["lock_state"])
        self.door = DoorSensorState(raw["door"])
        self.battery_percent = int(raw["battery"])
        for a in raw["authorizations"]:
            auth = Authorization(
                bytes.fromhex(a["auth_id"]),
                bytes.fromhex(a["key"]),
                a["name"],
                int(a["app_id"]),
                ClientType(a["id_type"]),
            )
            self.authorizations[auth.auth_id] = auth

    def save(self) -> None:
        if self.state_file is None:
            return
        raw = {
            "secret": self.keypair.secret.hex(),
            "nuki_id": self.nuki_id,
            "name": self.name,
            "next_auth_id": self.next_auth_id,
            "lock_state": int(self.lock_state),
            "door": int(self.door),
            "battery": self.battery_percent,
            "authorizations": [
                {
                    "auth_id": a.auth_id.hex(),
                    "key": a.key.hex(),
                    "name": a.name,
                    "app_id": a.app_id,
                    "id_type": int(a.id_type),
                }
                for a in self.authorizations.values()
            ],
        }
        tmp = self.state_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(raw, f)
        os.replace(tmp, self.state_file)

    # -- what the lock reports -------------------------------------------------------------
    def keyturner_states(self, lock_state: LockState | None = None) -> KeyturnerStates:
        return KeyturnerStates(
            nuki_state=NukiState.PAIRING_MODE if self.pairing_mode else NukiState.DOOR_MODE,
            lock_state=lock_state if lock_state is not None else self.lock_state,
            trigger=ActionTrigger.SYSTEM,
            current_time=datetime.now().replace(microsecond=0),  # the lock's naive local clock
            timezone_offset=60,
            critical_battery_state=battery_byte(
                self.battery_percent, critical=self.battery_critical
            ),
            config_update_count=self.config_update_count,
            last_lock_action=self.last_action,
            last_lock_action_completion_status=self.last_completion,
            door_sensor_state=self.door,
        )

    def config(self) -> Config:
        return Config(
            nuki_id=self.nuki_id,
            name=self.name,
            pairing_enabled=True,
            current_time=datetime.now().replace(microsecond=0),
            firmware_version=self.firmware,
            hardware_revision=self.hardware,
        )

    def battery_report(self) -> BatteryReport:
        mv = 4400 + self.battery_percent * 16
        return BatteryReport(
            battery_drain=120,
            battery_voltage=mv,
            critical_battery_state=battery_byte(
                self.battery_percent, critical=self.battery_critical
            ),
            lock_action=self.last_action,
            start_voltage=mv,
            lowest_voltage=mv - 150,
            lock_distance=720,
        )

    # -- physical changes (control channel) ------------------------------------------------
    def session(self) -> NukiSession:
        s = NukiSession(self)
        self.sessions.add(s)
        return s

    def broadcast_state(self) -> list[tuple[NukiSession, Outgoing]]:
        """Keyturner States for every connected, authenticated session (door/battery/jam changed)."""
        out = []
        states = self.keyturner_states().encode()
        for s in self.sessions:
            if s.authorization is not None:
                out.append((s, s._encrypted(Command.KEYTURNER_STATES, states)))
        return out


class NukiSession:
    """One BLE connection to the lock: the pairing exchange and encrypted commands."""

    def __init__(self, lock: NukiLock) -> None:
        self.lock = lock
        self.authorization: Authorization | None = None
        # pairing state: the step expected next and what earlier steps produced
        self._step = "idle"
        self._client_pk = b""
        self._key = b""
        self._nonce = b""
        self._nonce_abf = b""
        self._pending: Authorization | None = None

    def close(self) -> None:
        self.lock.sessions.discard(self)

    def handle(self, char: str, data: bytes) -> list[Outgoing]:
        """A write to ``char``; returns the notifications the lock sends in answer."""
        if char == PAIRING_GDIO:
            return self._pairing(data)
        if char == USDIO:
            return self._encrypted_request(data)
        return [self._plain_error(ErrorCode.ERROR_UNKNOWN, 0)]

    # -- helpers ---------------------------------------------------------------------------
    def _plain_error(self, code: ErrorCode, command: int) -> Outgoing:
        return Outgoing(
            PAIRING_GDIO, encode_plain(Command.ERROR_REPORT, ErrorReport(code, command).encode())
        )

    def _plain(self, command: Command, payload: bytes) -> Outgoing:
        return Outgoing(PAIRING_GDIO, encode_plain(command, payload))

    def _encrypted(self, command: Command, payload: bytes, *, motor: bool = False) -> Outgoing:
        auth = self.authorization
        assert auth is not None
        return Outgoing(USDIO, encode_encrypted(auth.key, auth.auth_id, command, payload), motor)

    def _error(self, code: ErrorCode, command: int) -> Outgoing:
        return self._encrypted(Command.ERROR_REPORT, ErrorReport(code, command).encode())

    # -- pairing (unencrypted, pairing GDIO) -----------------------------------------------
    def _pairing(self, data: bytes) -> list[Outgoing]:
        try:
            msg = decode_plain(data)
        except NukiFrameError as exc:
            command = struct.unpack("<H", data[:2])[0] if len(data) >= 2 else 0
            return [self._plain_error(exc.code, command)]
        try:
            return self._pairing_step(msg)
        except NukiFrameError as exc:
            self._step = "idle"
            return [self._plain_error(exc.code, msg.command)]

    def _pairing_step(self, msg: Message) -> list[Outgoing]:
        lock = self.lock
        cmd = msg.known_command
        if cmd is Command.REQUEST_DATA:
            if RequestData.decode(msg.payload).command != Command.PUBLIC_KEY:
                raise NukiFrameError(
                    "only the public key is served here", ErrorCode.P_ERROR_BAD_PARAMETER
                )
            if not lock.pairing_mode:
                raise NukiFrameError("not in pairing mode", ErrorCode.P_ERROR_NOT_PAIRING)
            self._step = "public_key"
            return [self._plain(Command.PUBLIC_KEY, lock.keypair.public)]
        if cmd is Command.PUBLIC_KEY and self._step == "public_key":
            if len(msg.payload) != 32:
                raise NukiFrameError("public key is 32 bytes", ErrorCode.ERROR_BAD_LENGTH)
            self._client_pk = msg.payload
            self._key = shared_key(self._client_pk, lock.keypair.secret)
            self._nonce = secrets.token_bytes(32)
            self._step = "authenticator"
            return [self._plain(Command.CHALLENGE, self._nonce)]
        if cmd is Command.AUTHORIZATION_AUTHENTICATOR and self._step == "authenticator":
            if len(msg.payload) != 32:
                raise NukiFrameError("authenticator is 32 bytes", ErrorCode.ERROR_BAD_LENGTH)
            if not verify_authenticator(
                self._key, msg.payload, self._client_pk, lock.keypair.public, self._nonce
            ):
                raise NukiFrameError("authenticator", ErrorCode.P_ERROR_BAD_AUTHENTICATOR)
            self._nonce = secrets.token_bytes(32)
            self._step = "data"
            return [self._plain(Command.CHALLENGE, self._nonce)]
        if cmd is Command.AUTHORIZATION_DATA and self._step == "data":
            data = AuthorizationData.decode(msg.payload)
            if not verify_authenticator(self._key, data.authenticator, data.body(), self._nonce):
                raise NukiFrameError("authenticator", ErrorCode.P_ERROR_BAD_AUTHENTICATOR)
            if len(lock.authorizations) >= MAX_USERS:
                raise NukiFrameError("too many users", ErrorCode.P_ERROR_MAX_USER)
            auth_id = struct.pack("<I", lock.next_auth_id)
            self._pending = Authorization(auth_id, self._key, data.name, data.app_id, data.id_type)
            self._nonce_abf = data.nonce
            self._nonce = secrets.token_bytes(32)
            uuid = lock.nuki_id.to_bytes(4, "little") + bytes(12)
            auth = authenticator(self._key, auth_id, uuid, self._nonce, self._nonce_abf)
            self._step = "confirmation"
            return [
                self._plain(
                    Command.AUTHORIZATION_ID,
                    AuthorizationId(auth, auth_id, uuid, self._nonce).encode(),
                )
            ]
        if cmd is Command.AUTHORIZATION_ID_CONFIRMATION and self._step == "confirmation":
            conf = AuthorizationIdConfirmation.decode(msg.payload)
            pending = self._pending
            assert pending is not None
            if conf.auth_id != pending.auth_id or not verify_authenticator(
                self._key, conf.authenticator, conf.auth_id, self._nonce
            ):
                raise NukiFrameError("authenticator", ErrorCode.P_ERROR_BAD_AUTHENTICATOR)
            lock.authorizations[pending.auth_id] = pending
            lock.next_auth_id += 1
            lock.pairing_mode = False
            lock.save()
            self._step = "idle"
            self._pending = None
            return [self._plain(Command.STATUS, Status(StatusCode.COMPLETE).encode())]
        raise NukiFrameError(
            f"command 0x{msg.command:04x} out of order (pairing step {self._step})",
            ErrorCode.P_ERROR_BAD_PARAMETER,
        )

    # -- encrypted commands (USDIO) --------------------------------------------------------
    def _encrypted_request(self, data: bytes) -> list[Outgoing]:
        try:
            envelope = parse_envelope(data)
        except NukiFrameError as exc:
            return [self._plain_error(exc.code, 0)]
        auth = self.lock.authorizations.get(envelope.auth_id)
        if auth is None:
            return [self._plain_error(ErrorCode.K_ERROR_NOT_AUTHORIZED, 0)]
        try:
            msg = open_envelope(envelope, auth.key)
        except NukiFrameError as exc:
            if exc.code is ErrorCode.K_ERROR_NOT_AUTHORIZED:
                return [self._plain_error(exc.code, 0)]
            self.authorization = auth
            return [self._error(exc.code, 0)]
        self.authorization = auth
        if envelope.nonce in auth.seen_nonces:
            return [self._error(ErrorCode.K_ERROR_BAD_NONCE, msg.command)]
        auth.seen_nonces.append(envelope.nonce)
        try:
            return self._command(auth, msg)
        except NukiFrameError as exc:
            return [self._error(exc.code, msg.command)]

    def _take_challenge(self, auth: Authorization, nonce: bytes) -> None:
        expected, auth.challenge = auth.challenge, None
        if expected is None or not secrets.compare_digest(expected, nonce):
            raise NukiFrameError(
                "challenge nonce not issued or already used", ErrorCode.K_ERROR_BAD_NONCE
            )

    def _command(self, auth: Authorization, msg: Message) -> list[Outgoing]:
        lock = self.lock
        cmd = msg.known_command
        if cmd is Command.REQUEST_DATA:
            wanted = RequestData.decode(msg.payload).command
            if wanted == Command.CHALLENGE:
                auth.challenge = secrets.token_bytes(32)
                return [self._encrypted(Command.CHALLENGE, auth.challenge)]
            if wanted == Command.KEYTURNER_STATES:
                lock.changed = False
                return [self._encrypted(Command.KEYTURNER_STATES, lock.keyturner_states().encode())]
            if wanted == Command.BATTERY_REPORT:
                return [self._encrypted(Command.BATTERY_REPORT, lock.battery_report().encode())]
            raise NukiFrameError(f"cannot send 0x{wanted:04x}", ErrorCode.K_ERROR_BAD_PARAMETER)
        if cmd is Command.REQUEST_CONFIG:
            self._take_challenge(auth, RequestConfig.decode(msg.payload).value)
            return [self._encrypted(Command.CONFIG, lock.config().encode())]
        if cmd is Command.LOCK_ACTION:
            request = LockActionRequest.decode(msg.payload)
            self._take_challenge(auth, request.nonce)
            return self._lock_action(request.action)
        raise NukiFrameError(
            f"command 0x{msg.command:04x} not supported", ErrorCode.K_ERROR_BAD_PARAMETER
        )

    def _lock_action(self, action: LockAction) -> list[Outgoing]:
        lock = self.lock
        if action not in _RESULT:
            raise NukiFrameError(f"{action.name} not supported", ErrorCode.K_ERROR_BAD_PARAMETER)
        if lock.busy:
            raise NukiFrameError("a lock action is under way", ErrorCode.K_ERROR_BUSY)
        moving, final = _RESULT[action]
        lock.last_action = action
        lock.changed = True
        accepted = self._encrypted(Command.STATUS, Status(StatusCode.ACCEPTED).encode())
        if lock.jammed:
            lock.lock_state = LockState.MOTOR_BLOCKED
            lock.last_completion = CompletionStatus.MOTOR_BLOCKED
            return [
                accepted,
                self._encrypted(
                    Command.KEYTURNER_STATES, lock.keyturner_states().encode(), motor=True
                ),
                self._error(ErrorCode.K_ERROR_MOTOR_BLOCKED, Command.LOCK_ACTION),
            ]
        lock.lock_state = final
        lock.last_completion = CompletionStatus.SUCCESS
        lock.save()
        return [
            accepted,
            self._encrypted(Command.KEYTURNER_STATES, lock.keyturner_states(moving).encode()),
            self._encrypted(Command.KEYTURNER_STATES, lock.keyturner_states().encode(), motor=True),
            self._encrypted(Command.STATUS, Status(StatusCode.COMPLETE).encode()),
        ]
