"""The carelock GATT layout: UUIDs, the profile characteristic, the SIG services.

The carelock service carries the sealed command channel (the *control point*) and a
plain *profile* characteristic that says which kind of device this is. Battery level
and identity come from the Bluetooth SIG services, so any BLE tool can read them:
Battery Service 0x180F / Battery Level 0x2A19 (uint8, percent) and Device Information
0x180A (manufacturer 0x2A29, model 0x2A24, serial 0x2A25, firmware 0x2A26, UTF-8).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final

from protocols.errors import FrameError

__all__ = [
    "BATTERY_LEVEL",
    "BATTERY_SERVICE",
    "CONTROL_POINT",
    "DEVICE_INFORMATION",
    "FIRMWARE_REVISION",
    "MANUFACTURER_NAME",
    "MAX_FRAME",
    "MIN_ATT_MTU",
    "MODEL_NUMBER",
    "PROFILE",
    "PROFILE_VERSION",
    "SERIAL_NUMBER",
    "SERVICE",
    "Kind",
    "decode_battery",
    "decode_profile",
    "decode_text",
    "encode_battery",
    "encode_profile",
    "sig_uuid",
]


def sig_uuid(short: int) -> str:
    """A 16-bit Bluetooth SIG UUID in its 128-bit form (bleak's spelling)."""
    return f"0000{short:04x}-0000-1000-8000-00805f9b34fb"


_BASE: Final = "-6c6f-636b-6777-636172656c6b"  # "lockgw" "carelk"
SERVICE: Final = "ca7e0001" + _BASE
#: write / write without response (central → device) and notify (device → central)
CONTROL_POINT: Final = "ca7e0002" + _BASE
#: read: profile version (1 byte) and device kind (1 byte), plain
PROFILE: Final = "ca7e0003" + _BASE

BATTERY_SERVICE: Final = sig_uuid(0x180F)
BATTERY_LEVEL: Final = sig_uuid(0x2A19)
DEVICE_INFORMATION: Final = sig_uuid(0x180A)
MANUFACTURER_NAME: Final = sig_uuid(0x2A29)
MODEL_NUMBER: Final = sig_uuid(0x2A24)
SERIAL_NUMBER: Final = sig_uuid(0x2A25)
FIRMWARE_REVISION: Final = sig_uuid(0x2A26)

PROFILE_VERSION: Final = 1
#: the largest carelock frame (a pairing response is 50 bytes); every frame fits one ATT write
MAX_FRAME: Final = 64
#: ATT_MTU a link needs so that every frame fits one write / notification (3 bytes ATT header)
MIN_ATT_MTU: Final = MAX_FRAME + 3
_MAX_TEXT: Final = 64


class Kind(IntEnum):
    LOCK = 1
    KEYSAFE = 2


def encode_profile(kind: Kind) -> bytes:
    return bytes((PROFILE_VERSION, kind))


def decode_profile(data: bytes) -> Kind:
    """The profile characteristic; refuses other versions and unknown kinds."""
    if len(data) != 2:
        raise FrameError(f"profile characteristic is 2 bytes, not {len(data)}")
    if data[0] != PROFILE_VERSION:
        raise FrameError(
            f"carelock profile version {data[0]} is not supported (want {PROFILE_VERSION})"
        )
    try:
        return Kind(data[1])
    except ValueError:
        raise FrameError(f"unknown carelock device kind {data[1]}") from None


def encode_battery(level: int) -> bytes:
    if not 0 <= level <= 100:
        raise ValueError(f"battery level {level} is outside 0..100")
    return bytes((level,))


def decode_battery(data: bytes) -> int:
    """Battery Level 0x2A19: one byte, 0..100 %."""
    if len(data) != 1 or data[0] > 100:
        raise FrameError("battery level is one byte, 0..100")
    return data[0]


def decode_text(data: bytes) -> str:
    """A Device Information string (UTF-8, at most 64 bytes)."""
    if len(data) > _MAX_TEXT:
        raise FrameError(f"device information text of {len(data)} bytes exceeds {_MAX_TEXT}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError("device information text is not UTF-8") from None
