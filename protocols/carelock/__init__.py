"""The open carelock GATT profile: an electromechanical lock and an electronic key safe.

Layers, bottom up: :mod:`.gatt` (UUIDs, SIG services), :mod:`.frames` (bytes ↔ frames),
:mod:`.crypto` (pairing, session keys, sealing), :mod:`.session` (sans-I/O state
machines for the central and the device). Documented in ``protocols/README.md``.
"""

from __future__ import annotations

from .crypto import Pairing, pairing_code
from .frames import (
    AuthenticationFailed,
    CommandBody,
    ErrorFrame,
    EventBody,
    FrameType,
    Opcode,
    PairRequest,
    Refused,
    Replayed,
    ResponseBody,
    Result,
    Sealed,
    SessionOpen,
    Status,
    StatusBlock,
    decode_frame,
)
from .gatt import Kind
from .session import CentralPairing, CentralSession, PeripheralSession, pair_device

__all__ = [
    "AuthenticationFailed",
    "CentralPairing",
    "CentralSession",
    "CommandBody",
    "ErrorFrame",
    "EventBody",
    "FrameType",
    "Kind",
    "Opcode",
    "PairRequest",
    "Pairing",
    "PeripheralSession",
    "Refused",
    "Replayed",
    "ResponseBody",
    "Result",
    "Sealed",
    "SessionOpen",
    "Status",
    "StatusBlock",
    "decode_frame",
    "pair_device",
    "pairing_code",
]
