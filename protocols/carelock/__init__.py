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
    NotConfirmed,
    Opcode,
    PairDone,
    PairDoneReason,
    PairingEntry,
    PairNonce,
    PairRequest,
    PairReveal,
    Refused,
    RemovePairingBody,
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
from .session import (
    CONFIRM_TIMEOUT,
    CentralPairing,
    CentralSession,
    DevicePairing,
    PeripheralSession,
)

__all__ = [
    "CONFIRM_TIMEOUT",
    "AuthenticationFailed",
    "CentralPairing",
    "CentralSession",
    "CommandBody",
    "DevicePairing",
    "ErrorFrame",
    "EventBody",
    "FrameType",
    "Kind",
    "NotConfirmed",
    "Opcode",
    "PairDone",
    "PairDoneReason",
    "PairNonce",
    "PairRequest",
    "PairReveal",
    "Pairing",
    "PairingEntry",
    "PeripheralSession",
    "Refused",
    "RemovePairingBody",
    "Replayed",
    "ResponseBody",
    "Result",
    "Sealed",
    "SessionOpen",
    "Status",
    "StatusBlock",
    "decode_frame",
    "pairing_code",
]
