"""Numbers of the Nuki Smart Lock BLE API: GATT UUIDs, command ids, codes and states.

Values as Nuki publishes them (Smart Lock BLE API, generations 1–4) and as the
independent client pyNukiBT uses them.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final

__all__ = [
    "KEYTURNER_GDIO",
    "KEYTURNER_SERVICE",
    "PAIRING_GDIO",
    "PAIRING_SERVICE",
    "USDIO",
    "ActionTrigger",
    "ClientType",
    "Command",
    "CompletionStatus",
    "DeviceType",
    "DoorSensorState",
    "ErrorCode",
    "LockAction",
    "LockState",
    "NukiState",
    "StatusCode",
]

#: Keyturner Pairing Service and its General Data Input Output characteristic
#: (unencrypted frames: pairing, and errors the lock cannot encrypt).
PAIRING_SERVICE: Final = "a92ee100-5501-11e4-916c-0800200c9a66"
PAIRING_GDIO: Final = "a92ee101-5501-11e4-916c-0800200c9a66"
#: Keyturner Service: GDIO (unencrypted) and User-Specific Data Input Output (encrypted).
KEYTURNER_SERVICE: Final = "a92ee200-5501-11e4-916c-0800200c9a66"
KEYTURNER_GDIO: Final = "a92ee201-5501-11e4-916c-0800200c9a66"
USDIO: Final = "a92ee202-5501-11e4-916c-0800200c9a66"


class Command(IntEnum):
    """Command identifiers (u16, little-endian on the wire)."""

    REQUEST_DATA = 0x0001
    PUBLIC_KEY = 0x0003
    CHALLENGE = 0x0004
    AUTHORIZATION_AUTHENTICATOR = 0x0005
    AUTHORIZATION_DATA = 0x0006
    AUTHORIZATION_ID = 0x0007
    KEYTURNER_STATES = 0x000C
    LOCK_ACTION = 0x000D
    STATUS = 0x000E
    BATTERY_REPORT = 0x0011
    ERROR_REPORT = 0x0012
    REQUEST_CONFIG = 0x0014
    CONFIG = 0x0015
    AUTHORIZATION_ID_CONFIRMATION = 0x001E


class ErrorCode(IntEnum):
    """Error Report codes."""

    ERROR_BAD_CRC = 0xFD
    ERROR_BAD_LENGTH = 0xFE
    ERROR_UNKNOWN = 0xFF
    P_ERROR_NOT_PAIRING = 0x10
    P_ERROR_BAD_AUTHENTICATOR = 0x11
    P_ERROR_BAD_PARAMETER = 0x12
    P_ERROR_MAX_USER = 0x13
    K_ERROR_NOT_AUTHORIZED = 0x20
    K_ERROR_BAD_PIN = 0x21
    K_ERROR_BAD_NONCE = 0x22
    K_ERROR_BAD_PARAMETER = 0x23
    K_ERROR_INVALID_AUTH_ID = 0x24
    K_ERROR_DISABLED = 0x25
    K_ERROR_REMOTE_NOT_ALLOWED = 0x26
    K_ERROR_TIME_NOT_ALLOWED = 0x27
    K_ERROR_AUTO_UNLOCK_TOO_RECENT = 0x40
    K_ERROR_POSITION_UNKNOWN = 0x41
    K_ERROR_MOTOR_BLOCKED = 0x42
    K_ERROR_CLUTCH_FAILURE = 0x43
    K_ERROR_MOTOR_TIMEOUT = 0x44
    K_ERROR_BUSY = 0x45
    K_ERROR_CANCELED = 0x46
    K_ERROR_NOT_CALIBRATED = 0x47
    K_ERROR_MOTOR_LOW_VOLTAGE = 0x49


class StatusCode(IntEnum):
    COMPLETE = 0x00
    ACCEPTED = 0x01


class NukiState(IntEnum):
    UNINITIALIZED = 0x00
    PAIRING_MODE = 0x01
    DOOR_MODE = 0x02
    MAINTENANCE_MODE = 0x04


class LockState(IntEnum):
    UNCALIBRATED = 0x00
    LOCKED = 0x01
    UNLOCKING = 0x02
    UNLOCKED = 0x03
    LOCKING = 0x04
    UNLATCHED = 0x05
    UNLOCKED_LOCK_N_GO = 0x06
    UNLATCHING = 0x07
    CALIBRATION = 0xFC
    BOOT_RUN = 0xFD
    MOTOR_BLOCKED = 0xFE
    UNDEFINED = 0xFF


class LockAction(IntEnum):
    NONE = 0x00
    UNLOCK = 0x01
    LOCK = 0x02
    UNLATCH = 0x03
    LOCK_N_GO = 0x04
    LOCK_N_GO_UNLATCH = 0x05
    FULL_LOCK = 0x06
    FOB_ACTION_1 = 0x81
    FOB_ACTION_2 = 0x82
    FOB_ACTION_3 = 0x83


class ActionTrigger(IntEnum):
    SYSTEM = 0x00
    MANUAL = 0x01
    BUTTON = 0x02
    AUTOMATIC = 0x03
    AUTO_LOCK = 0x06


class CompletionStatus(IntEnum):
    SUCCESS = 0x00
    MOTOR_BLOCKED = 0x01
    CANCELED = 0x02
    TOO_RECENT = 0x03
    BUSY = 0x04
    LOW_MOTOR_VOLTAGE = 0x05
    CLUTCH_FAILURE = 0x06
    MOTOR_POWER_FAILURE = 0x07
    INCOMPLETE = 0x08
    OTHER_ERROR = 0xFE
    UNKNOWN = 0xFF


class DoorSensorState(IntEnum):
    UNAVAILABLE = 0x00
    DEACTIVATED = 0x01
    DOOR_CLOSED = 0x02
    DOOR_OPENED = 0x03
    DOOR_STATE_UNKNOWN = 0x04
    CALIBRATING = 0x05
    UNCALIBRATED = 0x10
    TAMPERED = 0xF0
    UNKNOWN = 0xFF


class ClientType(IntEnum):
    """ID type in Authorization Data."""

    APP = 0x00
    BRIDGE = 0x01
    FOB = 0x02
    KEYPAD = 0x03


class DeviceType(IntEnum):
    """Device type byte at the end of Config (newer firmware)."""

    SMARTLOCK_1_2 = 0x00
    OPENER = 0x02
    SMARTDOOR = 0x03
    SMARTLOCK_3_4 = 0x04
    SMARTLOCK_ULTRA = 0x05
