"""Payloads of the Nuki commands lockgw speaks, each a frozen value with ``encode``/``decode``.

Fixed little-endian layouts (``struct``); a payload of the wrong length raises
:class:`NukiFrameError` with ``ERROR_BAD_LENGTH``, an out-of-range value
``K_ERROR_BAD_PARAMETER`` — the codes a lock answers with. Newer firmware appends
fields to Keyturner States and Config; decoders accept and ignore a longer tail.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from typing import ClassVar, Final, Self, TypeVar

from protocols.nuki.constants import (
    ActionTrigger,
    ClientType,
    Command,
    CompletionStatus,
    DeviceType,
    DoorSensorState,
    ErrorCode,
    LockAction,
    LockState,
    NukiState,
    StatusCode,
)
from protocols.nuki.frames import NukiFrameError

__all__ = [
    "AuthorizationAuthenticator",
    "AuthorizationData",
    "AuthorizationId",
    "AuthorizationIdConfirmation",
    "BatteryReport",
    "Challenge",
    "Config",
    "ErrorReport",
    "KeyturnerStates",
    "LockActionRequest",
    "PublicKey",
    "RequestConfig",
    "RequestData",
    "Status",
    "battery_byte",
    "battery_from_byte",
]

NONCE_32: Final = 32
E = TypeVar("E", bound=IntEnum)


def _exact(data: bytes, size: int, what: str) -> None:
    if len(data) != size:
        raise NukiFrameError(
            f"{what}: {len(data)} bytes, expected {size}", ErrorCode.ERROR_BAD_LENGTH
        )


def _enum(kind: type[E], value: int, what: str, code: ErrorCode) -> E:
    try:
        return kind(value)
    except ValueError as exc:
        raise NukiFrameError(f"{what}: unknown value 0x{value:02x}", code) from exc


def _name(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")


def _padded(name: str, size: int) -> bytes:
    raw = name.encode("utf-8")[:size]
    return raw.ljust(size, b"\0")


# -- battery byte --------------------------------------------------------------------------
def battery_byte(percent: int, *, critical: bool, charging: bool = False) -> int:
    """Critical battery state: bit 0 critical, bit 1 charging, bits 2–7 percent / 2."""
    if not 0 <= percent <= 100:
        raise ValueError("battery percent is 0..100")
    return ((percent // 2) << 2) | (2 if charging else 0) | (1 if critical else 0)


def battery_from_byte(value: int) -> tuple[int, bool, bool]:
    """(percent, critical, charging) from the critical battery state byte."""
    return min(((value & 0xFC) >> 2) * 2, 100), bool(value & 1), bool(value & 2)


# -- small fixed payloads ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RequestData:
    """Request Data: the command id the client wants the lock to send."""

    command: int

    def encode(self) -> bytes:
        return struct.pack("<H", self.command)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _exact(data, 2, "request data")
        return cls(struct.unpack("<H", data)[0])


@dataclass(frozen=True, slots=True)
class _Bytes32:
    value: bytes
    what: ClassVar[str] = "32 bytes"

    def __post_init__(self) -> None:
        _exact(self.value, 32, self.what)

    def encode(self) -> bytes:
        return self.value

    @classmethod
    def decode(cls, data: bytes) -> Self:
        return cls(bytes(data))


@dataclass(frozen=True, slots=True)
class PublicKey(_Bytes32):
    what: ClassVar[str] = "public key"


@dataclass(frozen=True, slots=True)
class Challenge(_Bytes32):
    what: ClassVar[str] = "challenge nonce"


@dataclass(frozen=True, slots=True)
class AuthorizationAuthenticator(_Bytes32):
    what: ClassVar[str] = "authorization authenticator"


@dataclass(frozen=True, slots=True)
class RequestConfig(_Bytes32):
    """Request Config: carries a challenge nonce."""

    what: ClassVar[str] = "request config nonce"


@dataclass(frozen=True, slots=True)
class Status:
    status: StatusCode

    def encode(self) -> bytes:
        return bytes([self.status])

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _exact(data, 1, "status")
        return cls(_enum(StatusCode, data[0], "status", ErrorCode.K_ERROR_BAD_PARAMETER))


@dataclass(frozen=True, slots=True)
class ErrorReport:
    """Error Report: the error code and the command it answers (codes not in our table stay ints)."""

    code: int
    command: int

    def encode(self) -> bytes:
        return struct.pack("<BH", self.code, self.command)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _exact(data, 3, "error report")
        code, command = struct.unpack("<BH", data)
        return cls(code, command)

    @property
    def error(self) -> ErrorCode | None:
        try:
            return ErrorCode(self.code)
        except ValueError:
            return None

    def describe(self) -> str:
        err = self.error
        name = err.name if err is not None else f"0x{self.code:02x}"
        try:
            cmd = Command(self.command).name
        except ValueError:
            cmd = f"0x{self.command:04x}"
        return f"{name} for {cmd}"


# -- pairing -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AuthorizationData:
    """Authorization Data (client → lock): 32 + 1 + 4 + 32 + 32 = 101 bytes."""

    authenticator: bytes
    id_type: ClientType
    app_id: int
    name: str
    nonce: bytes
    SIZE: ClassVar[int] = 101

    def body(self) -> bytes:
        """What follows the authenticator (the authenticator covers it + the lock's nonce)."""
        return struct.pack("<BI", self.id_type, self.app_id) + _padded(self.name, 32) + self.nonce

    def encode(self) -> bytes:
        return self.authenticator + self.body()

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _exact(data, cls.SIZE, "authorization data")
        id_type = _enum(ClientType, data[32], "id type", ErrorCode.P_ERROR_BAD_PARAMETER)
        (app_id,) = struct.unpack("<I", data[33:37])
        return cls(bytes(data[:32]), id_type, app_id, _name(data[37:69]), bytes(data[69:101]))


@dataclass(frozen=True, slots=True)
class AuthorizationId:
    """Authorization-ID (lock → client): authenticator, auth id, lock UUID, new nonce (84 bytes)."""

    authenticator: bytes
    auth_id: bytes
    uuid: bytes
    nonce: bytes
    SIZE: ClassVar[int] = 84

    def encode(self) -> bytes:
        return self.authenticator + self.auth_id + self.uuid + self.nonce

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _exact(data, cls.SIZE, "authorization id")
        return cls(bytes(data[:32]), bytes(data[32:36]), bytes(data[36:52]), bytes(data[52:84]))


@dataclass(frozen=True, slots=True)
class AuthorizationIdConfirmation:
    """Authorization-ID Confirmation (client → lock): authenticator, auth id (36 bytes)."""

    authenticator: bytes
    auth_id: bytes

    def encode(self) -> bytes:
        return self.authenticator + self.auth_id

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _exact(data, 36, "authorization id confirmation")
        return cls(bytes(data[:32]), bytes(data[32:36]))


# -- keyturner -----------------------------------------------------------------------------
def _time_bytes(t: datetime) -> bytes:
    return struct.pack("<HBBBBB", t.year, t.month, t.day, t.hour, t.minute, t.second)


def _time_from(data: bytes) -> datetime | None:
    year, month, day, hour, minute, second = struct.unpack("<HBBBBB", data)
    try:
        return datetime(year, month, day, hour, minute, second)  # the lock keeps naive local time
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class LockActionRequest:
    """Lock Action: action, app id, flags, optional 20-byte name suffix, challenge nonce."""

    action: LockAction
    app_id: int
    nonce: bytes
    flags: int = 0
    name_suffix: str | None = None

    def encode(self) -> bytes:
        head = struct.pack("<BIB", self.action, self.app_id, self.flags)
        suffix = _padded(self.name_suffix, 20) if self.name_suffix is not None else b""
        return head + suffix + self.nonce

    @classmethod
    def decode(cls, data: bytes) -> Self:
        if len(data) not in (38, 58):
            raise NukiFrameError(
                f"lock action: {len(data)} bytes, expected 38 or 58", ErrorCode.ERROR_BAD_LENGTH
            )
        action = _enum(LockAction, data[0], "lock action", ErrorCode.K_ERROR_BAD_PARAMETER)
        (app_id,) = struct.unpack("<I", data[1:5])
        suffix = _name(data[6:26]) if len(data) == 58 else None
        return cls(action, app_id, bytes(data[-32:]), data[5], suffix)


@dataclass(frozen=True, slots=True)
class KeyturnerStates:
    """Keyturner States (lock variant). 19 bytes; later firmware appends more (ignored)."""

    nuki_state: NukiState
    lock_state: LockState
    trigger: ActionTrigger
    current_time: datetime | None
    timezone_offset: int
    critical_battery_state: int
    config_update_count: int = 0
    lock_n_go_timer: int = 0
    last_lock_action: LockAction = LockAction.NONE
    last_lock_action_trigger: ActionTrigger = ActionTrigger.SYSTEM
    last_lock_action_completion_status: CompletionStatus = CompletionStatus.SUCCESS
    door_sensor_state: DoorSensorState = DoorSensorState.UNAVAILABLE
    MIN_SIZE: ClassVar[int] = 18

    @property
    def battery_percent(self) -> int:
        return battery_from_byte(self.critical_battery_state)[0]

    @property
    def battery_critical(self) -> bool:
        return battery_from_byte(self.critical_battery_state)[1]

    def encode(self) -> bytes:
        t = self.current_time or datetime(2000, 1, 1)  # the lock keeps naive local time
        return (
            struct.pack("<BBB", self.nuki_state, self.lock_state, self.trigger)
            + _time_bytes(t)
            + struct.pack(
                "<hBBBBBBB",
                self.timezone_offset,
                self.critical_battery_state,
                self.config_update_count,
                self.lock_n_go_timer,
                self.last_lock_action,
                self.last_lock_action_trigger,
                self.last_lock_action_completion_status,
                self.door_sensor_state,
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        if len(data) < cls.MIN_SIZE:
            raise NukiFrameError(
                f"keyturner states: {len(data)} bytes, at least 18", ErrorCode.ERROR_BAD_LENGTH
            )
        bad = ErrorCode.K_ERROR_BAD_PARAMETER
        tz, crit, count, lng, last, last_trig, completion = struct.unpack("<hBBBBBB", data[10:18])
        door = (
            _enum(DoorSensorState, data[18], "door sensor state", bad)
            if len(data) > 18
            else DoorSensorState.UNAVAILABLE
        )
        return cls(
            nuki_state=_enum(NukiState, data[0], "nuki state", bad),
            lock_state=_enum(LockState, data[1], "lock state", bad),
            trigger=_enum(ActionTrigger, data[2], "trigger", bad),
            current_time=_time_from(data[3:10]),
            timezone_offset=tz,
            critical_battery_state=crit,
            config_update_count=count,
            lock_n_go_timer=lng,
            last_lock_action=_enum(LockAction, last, "last lock action", bad),
            last_lock_action_trigger=_enum(ActionTrigger, last_trig, "last trigger", bad),
            last_lock_action_completion_status=_enum(
                CompletionStatus, completion, "completion status", bad
            ),
            door_sensor_state=door,
        )


@dataclass(frozen=True, slots=True)
class BatteryReport:
    """Battery Report (17 bytes): drain (mWs), voltage (mV), critical state byte and motor data."""

    battery_drain: int
    battery_voltage: int
    critical_battery_state: int
    lock_action: LockAction = LockAction.NONE
    start_voltage: int = 0
    lowest_voltage: int = 0
    lock_distance: int = 0
    start_temperature: int = 20
    max_turn_current: int = 0
    battery_resistance: int = 0
    _FMT: ClassVar[str] = "<HHBBHHHbHH"

    def encode(self) -> bytes:
        return struct.pack(
            self._FMT,
            self.battery_drain,
            self.battery_voltage,
            self.critical_battery_state,
            self.lock_action,
            self.start_voltage,
            self.lowest_voltage,
            self.lock_distance,
            self.start_temperature,
            self.max_turn_current,
            self.battery_resistance,
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _exact(data, struct.calcsize(cls._FMT), "battery report")
        f = struct.unpack(cls._FMT, data)
        action = _enum(LockAction, f[3], "lock action", ErrorCode.K_ERROR_BAD_PARAMETER)
        return cls(f[0], f[1], f[2], action, *f[4:])


@dataclass(frozen=True, slots=True)
class Config:
    """Config (lock variant): 74 bytes, 75 with the device type of newer firmware."""

    nuki_id: int
    name: str
    latitude: float = 0.0
    longitude: float = 0.0
    auto_unlatch: bool = False
    pairing_enabled: bool = True
    button_enabled: bool = True
    led_enabled: bool = True
    led_brightness: int = 3
    current_time: datetime | None = None
    timezone_offset: int = 60
    dst_mode: int = 1
    has_fob: bool = False
    fob_actions: tuple[int, int, int] = (1, 2, 0)
    single_lock: bool = False
    advertising_mode: int = 0
    has_keypad: bool = False
    firmware_version: tuple[int, int, int] = (0, 0, 0)
    hardware_revision: tuple[int, int] = (0, 0)
    homekit_status: int = 0
    timezone_id: int = 37  # Europe/Berlin, the zone Nuki lists for CET
    device_type: DeviceType | None = field(default=DeviceType.SMARTLOCK_3_4)
    SIZE: ClassVar[int] = 74

    def encode(self) -> bytes:
        t = self.current_time or datetime(2000, 1, 1)  # the lock keeps naive local time
        out = (
            struct.pack("<I", self.nuki_id)
            + _padded(self.name, 32)
            + struct.pack("<ff", self.latitude, self.longitude)
            + bytes(
                [
                    self.auto_unlatch,
                    self.pairing_enabled,
                    self.button_enabled,
                    self.led_enabled,
                    self.led_brightness,
                ]
            )
            + _time_bytes(t)
            + struct.pack("<hBB", self.timezone_offset, self.dst_mode, self.has_fob)
            + bytes([*self.fob_actions, self.single_lock, self.advertising_mode, self.has_keypad])
            + bytes([*self.firmware_version, *self.hardware_revision, self.homekit_status])
            + struct.pack("<H", self.timezone_id)
        )
        if self.device_type is not None:
            out += bytes([self.device_type])
        return out

    @classmethod
    def decode(cls, data: bytes) -> Self:
        if len(data) < cls.SIZE:
            raise NukiFrameError(
                f"config: {len(data)} bytes, at least {cls.SIZE}", ErrorCode.ERROR_BAD_LENGTH
            )
        (nuki_id,) = struct.unpack("<I", data[:4])
        lat, lon = struct.unpack("<ff", data[36:44])
        tz, dst, has_fob = struct.unpack("<hBB", data[56:60])
        (tz_id,) = struct.unpack("<H", data[72:74])
        device_type: DeviceType | None = None
        if len(data) > 74:
            try:
                device_type = DeviceType(data[74])
            except ValueError:
                device_type = None
        return cls(
            nuki_id=nuki_id,
            name=_name(data[4:36]),
            latitude=lat,
            longitude=lon,
            auto_unlatch=bool(data[44]),
            pairing_enabled=bool(data[45]),
            button_enabled=bool(data[46]),
            led_enabled=bool(data[47]),
            led_brightness=data[48],
            current_time=_time_from(data[49:56]),
            timezone_offset=tz,
            dst_mode=dst,
            has_fob=bool(has_fob),
            fob_actions=(data[60], data[61], data[62]),
            single_lock=bool(data[63]),
            advertising_mode=data[64],
            has_keypad=bool(data[65]),
            firmware_version=(data[66], data[67], data[68]),
            hardware_revision=(data[69], data[70]),
            homekit_status=data[71],
            timezone_id=tz_id,
            device_type=device_type,
        )

    @property
    def firmware(self) -> str:
        return ".".join(str(v) for v in self.firmware_version)

    @property
    def serial(self) -> str:
        """The Nuki ID as the app and the sticker show it: 8 hex digits."""
        return f"{self.nuki_id:08X}"
