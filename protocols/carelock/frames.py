"""carelock frames on the control point, byte by byte. Pure: bytes in, values out.

Every frame starts with a type byte and has one exact length, so a truncated or
padded frame is refused before any cryptography runs::

    0x01 PAIR_REQUEST    c→d  type | central X25519 public (32)                      33
    0x02 PAIR_RESPONSE   d→c  type | status | device X25519 public (32) | commitment (16) 50
                              (status ≠ ok: type | status)                             2
    0x05 PAIR_NONCE      c→d  type | central nonce (16)                               17
    0x06 PAIR_REVEAL     d→c  type | status | device nonce (16) | confirm (16)        34
                              (status ≠ ok: type | status)                             2
    0x07 PAIR_DONE       d→c  type | status (ok / pairing refused) | reason            3
    0x03 SESSION_OPEN    c→d  type | key id (8) | central nonce (16)                  25
    0x04 SESSION_ACCEPT  d→c  type | status | device nonce (16) | sealed status (4+16) 38
                              (status ≠ ok: type | status)                             2
    0x10 COMMAND         c→d  type | counter (4) | sealed(op, arg u16) (3+16)         24
    0x11 RESPONSE        d→c  type | counter (4) | sealed(reply-to u32, result, status (4)) (9+16) 30
    0x12 EVENT           d→c  type | counter (4) | sealed(status (4)) (4+16)          25
    0x13 PAIRING         d→c  type | counter (4) | sealed(reply-to u32, index, total, key id (8), flags) (15+16) 36
    0x14 REMOVE_PAIRING  c→d  type | counter (4) | sealed(key id (8)) (8+16)             29
    0x7F ERROR           d→c  type | status                                            2

Integers are big-endian. "sealed" is ChaCha20-Poly1305 (see :mod:`.crypto`): the
ciphertext followed by the 16-byte tag; the bytes before it are the associated data.

The 4-byte device status block: kind, then for a lock bolt and door contact, for a key
safe compartment and key sensor, then flags (bit 0 battery critical, bit 1 auto-relock on).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final, TypeVar

from protocols.device import CompartmentState, DoorState, KeyState, LockState
from protocols.errors import FrameError

from .gatt import MAX_FRAME, Kind

__all__ = [
    "TAG_LEN",
    "AuthenticationFailed",
    "CommandBody",
    "ErrorFrame",
    "EventBody",
    "FrameType",
    "NotConfirmed",
    "Opcode",
    "PairDone",
    "PairDoneReason",
    "PairNonce",
    "PairRequest",
    "PairResponse",
    "PairReveal",
    "PairingEntry",
    "Refused",
    "RemovePairingBody",
    "Replayed",
    "ResponseBody",
    "Result",
    "Sealed",
    "SessionAccept",
    "SessionOpen",
    "Status",
    "StatusBlock",
    "decode_frame",
]

TAG_LEN: Final = 16
KEY_LEN: Final = 32
KEY_ID_LEN: Final = 8
NONCE_LEN: Final = 16
CONFIRM_LEN: Final = 16
COMMIT_LEN: Final = 16


class AuthenticationFailed(FrameError):
    """A sealed frame whose tag does not verify (tampered, or sealed under another key)."""


class Replayed(FrameError):
    """A sealed frame whose counter is not above the last one accepted."""


class Refused(FrameError):
    """The peer answered with a refusing status (not in pairing mode, unknown key, ...)."""

    def __init__(self, status: Status, what: str) -> None:
        super().__init__(f"{what} refused: {status.name.lower()}")
        self.status = status


class NotConfirmed(Refused):
    """The device did not store a pairing: nobody confirmed its code on the device."""

    def __init__(self, outcome: PairDoneReason) -> None:
        FrameError.__init__(self, f"pairing not stored by the device: {outcome.name.lower()}")
        self.status = Status.PAIRING_REFUSED
        #: why (rejected on the device, timed out, window closed, full)
        self.outcome = outcome


class FrameType(IntEnum):
    PAIR_REQUEST = 0x01
    PAIR_RESPONSE = 0x02
    SESSION_OPEN = 0x03
    PAIR_NONCE = 0x05
    PAIR_REVEAL = 0x06
    PAIR_DONE = 0x07
    SESSION_ACCEPT = 0x04
    COMMAND = 0x10
    RESPONSE = 0x11
    EVENT = 0x12
    PAIRING = 0x13
    REMOVE_PAIRING = 0x14
    ERROR = 0x7F


class Status(IntEnum):
    """Plain status byte of PAIR_RESPONSE, SESSION_ACCEPT and ERROR."""

    OK = 0
    MALFORMED = 1
    NOT_IN_PAIRING_MODE = 2
    PAIRING_REFUSED = 3
    UNKNOWN_KEY = 4
    NO_SESSION = 5
    AUTH_FAILED = 6
    REPLAYED = 7


class PairDoneReason(IntEnum):
    """Why a PAIR_DONE says what it says: the pairing was stored (status ok), or why not
    (status pairing refused)."""

    STORED = 0
    #: the person at the device pressed reject (the code did not match the gateway's)
    REJECTED = 1
    #: nobody confirmed on the device within the confirm timeout
    TIMED_OUT = 2
    #: the pairing window closed before anybody confirmed
    WINDOW_CLOSED = 3
    #: the device already holds its maximum number of pairings
    FULL = 4


class Opcode(IntEnum):
    STATUS = 0x01
    LOCK = 0x10
    UNLOCK = 0x11
    UNLATCH = 0x12
    OPEN = 0x20
    #: argument: seconds after which an unlocked lock relocks (door closed); 0 = off
    SET_AUTO_RELOCK = 0x30
    #: argument: index of the pairing to describe (0 …); answered with a PAIRING frame
    LIST_PAIRINGS = 0x40


class Result(IntEnum):
    OK = 0
    JAMMED = 1
    NOT_SUPPORTED = 2
    BATTERY_EMPTY = 3
    DOOR_OPEN = 4
    BAD_ARGUMENT = 5


_BOLT: Final = {
    LockState.UNKNOWN: 0,
    LockState.LOCKED: 1,
    LockState.UNLOCKED: 2,
    LockState.UNLATCHED: 3,
    LockState.JAMMED: 4,
}
_DOOR: Final = {DoorState.UNKNOWN: 0, DoorState.CLOSED: 1, DoorState.OPEN: 2}
_COMPARTMENT: Final = {
    CompartmentState.UNKNOWN: 0,
    CompartmentState.CLOSED: 1,
    CompartmentState.OPEN: 2,
}
_KEY: Final = {KeyState.UNKNOWN: 0, KeyState.PRESENT: 1, KeyState.ABSENT: 2}
_FLAG_BATTERY_CRITICAL: Final = 0x01
_FLAG_AUTO_RELOCK: Final = 0x02
E = TypeVar("E")


def _lookup(table: dict[E, int], value: int, what: str) -> E:
    for k, v in table.items():
        if v == value:
            return k
    raise FrameError(f"unknown {what} value {value}")


@dataclass(frozen=True, slots=True)
class StatusBlock:
    """What the device reports about itself in every response and event."""

    kind: Kind
    lock: LockState | None = None
    door: DoorState | None = None
    compartment: CompartmentState | None = None
    key: KeyState | None = None
    battery_critical: bool = False
    auto_relock: bool = False

    def encode(self) -> bytes:
        flags = (_FLAG_BATTERY_CRITICAL if self.battery_critical else 0) | (
            _FLAG_AUTO_RELOCK if self.auto_relock else 0
        )
        if self.kind is Kind.LOCK:
            a = _BOLT[self.lock or LockState.UNKNOWN]
            b = _DOOR[self.door or DoorState.UNKNOWN]
        else:
            a = _COMPARTMENT[self.compartment or CompartmentState.UNKNOWN]
            b = _KEY[self.key or KeyState.UNKNOWN]
        return bytes((self.kind, a, b, flags))

    @classmethod
    def decode(cls, data: bytes) -> StatusBlock:
        if len(data) != 4:
            raise FrameError(f"status block is 4 bytes, not {len(data)}")
        try:
            kind = Kind(data[0])
        except ValueError:
            raise FrameError(f"unknown device kind {data[0]}") from None
        flags = data[3]
        if flags & ~(_FLAG_BATTERY_CRITICAL | _FLAG_AUTO_RELOCK):
            raise FrameError(f"unknown status flags {flags:#04x}")
        critical, relock = bool(flags & _FLAG_BATTERY_CRITICAL), bool(flags & _FLAG_AUTO_RELOCK)
        if kind is Kind.LOCK:
            return cls(
                kind,
                lock=_lookup(_BOLT, data[1], "bolt"),
                door=_lookup(_DOOR, data[2], "door contact"),
                battery_critical=critical,
                auto_relock=relock,
            )
        if relock:
            raise FrameError("a key safe has no auto-relock")
        return cls(
            kind,
            compartment=_lookup(_COMPARTMENT, data[1], "compartment"),
            key=_lookup(_KEY, data[2], "key sensor"),
            battery_critical=critical,
        )


# -- plaintext bodies of sealed frames -------------------------------------------------------
_CMD = struct.Struct(">BH")
_RESP = struct.Struct(">IB")


@dataclass(frozen=True, slots=True)
class CommandBody:
    op: Opcode
    arg: int = 0

    def encode(self) -> bytes:
        return _CMD.pack(self.op, self.arg)

    @classmethod
    def decode(cls, data: bytes) -> CommandBody:
        if len(data) != _CMD.size:
            raise FrameError(f"command body is {_CMD.size} bytes, not {len(data)}")
        op, arg = _CMD.unpack(data)
        try:
            opcode = Opcode(op)
        except ValueError:
            raise FrameError(f"unknown opcode {op:#04x}") from None
        if opcode not in (Opcode.SET_AUTO_RELOCK, Opcode.LIST_PAIRINGS) and arg != 0:
            raise FrameError(f"{opcode.name} takes no argument")
        return cls(opcode, arg)


@dataclass(frozen=True, slots=True)
class ResponseBody:
    reply_to: int
    result: Result
    status: StatusBlock

    def encode(self) -> bytes:
        return _RESP.pack(self.reply_to, self.result) + self.status.encode()

    @classmethod
    def decode(cls, data: bytes) -> ResponseBody:
        if len(data) != _RESP.size + 4:
            raise FrameError(f"response body is {_RESP.size + 4} bytes, not {len(data)}")
        reply_to, result = _RESP.unpack_from(data)
        try:
            res = Result(result)
        except ValueError:
            raise FrameError(f"unknown result code {result}") from None
        return cls(reply_to, res, StatusBlock.decode(data[_RESP.size :]))


_ENTRY = struct.Struct(">IBB8sB")
_FLAG_THIS_SESSION: Final = 0x01


@dataclass(frozen=True, slots=True)
class PairingEntry:
    """One pairing the device holds, in answer to LIST_PAIRINGS (``index`` of ``total``;
    ``total`` 0: the device holds none — then ``key_id`` is zeros)."""

    reply_to: int
    index: int
    total: int
    key_id: bytes
    #: the pairing of the session that asked
    this_session: bool = False

    def encode(self) -> bytes:
        flags = _FLAG_THIS_SESSION if self.this_session else 0
        return _ENTRY.pack(self.reply_to, self.index, self.total, self.key_id, flags)

    @classmethod
    def decode(cls, data: bytes) -> PairingEntry:
        if len(data) != _ENTRY.size:
            raise FrameError(f"pairing entry is {_ENTRY.size} bytes, not {len(data)}")
        reply_to, index, total, key_id, flags = _ENTRY.unpack(data)
        if flags & ~_FLAG_THIS_SESSION:
            raise FrameError(f"unknown pairing flags {flags:#04x}")
        if total and index >= total:
            raise FrameError(f"pairing {index} of {total}")
        return cls(reply_to, index, total, key_id, bool(flags & _FLAG_THIS_SESSION))


@dataclass(frozen=True, slots=True)
class RemovePairingBody:
    """Forget the pairing with this key id (answered with RESPONSE: ok, or bad argument
    when the device holds no such pairing)."""

    key_id: bytes

    def encode(self) -> bytes:
        return self.key_id

    @classmethod
    def decode(cls, data: bytes) -> RemovePairingBody:
        if len(data) != KEY_ID_LEN:
            raise FrameError(f"a key id is {KEY_ID_LEN} bytes, not {len(data)}")
        return cls(data)


@dataclass(frozen=True, slots=True)
class EventBody:
    status: StatusBlock

    def encode(self) -> bytes:
        return self.status.encode()

    @classmethod
    def decode(cls, data: bytes) -> EventBody:
        return cls(StatusBlock.decode(data))


# -- frames on the wire ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PairRequest:
    central_pub: bytes

    def encode(self) -> bytes:
        return bytes((FrameType.PAIR_REQUEST,)) + self.central_pub


@dataclass(frozen=True, slots=True)
class PairResponse:
    status: Status
    device_pub: bytes = b""
    #: the device's commitment to its pairing nonce, sent before it sees the central's
    commitment: bytes = b""

    def encode(self) -> bytes:
        return bytes((FrameType.PAIR_RESPONSE, self.status)) + self.device_pub + self.commitment


@dataclass(frozen=True, slots=True)
class PairNonce:
    """The central's pairing nonce, sent after the device committed to its own."""

    nonce: bytes

    def encode(self) -> bytes:
        return bytes((FrameType.PAIR_NONCE,)) + self.nonce


@dataclass(frozen=True, slots=True)
class PairReveal:
    """The device's nonce (opening its commitment) and its key confirmation."""

    status: Status
    nonce: bytes = b""
    confirm: bytes = b""

    def encode(self) -> bytes:
        return bytes((FrameType.PAIR_REVEAL, self.status)) + self.nonce + self.confirm


@dataclass(frozen=True, slots=True)
class PairDone:
    """After a PAIR_REVEAL the device holds the pairing pending and shows its code; this
    says whether a person confirmed it on the device (stored) or not (and why)."""

    status: Status
    reason: PairDoneReason

    def __post_init__(self) -> None:
        if (self.status is Status.OK) != (self.reason is PairDoneReason.STORED):
            raise FrameError(f"pair done {self.status.name.lower()} with {self.reason.name.lower()}")
        if self.status not in (Status.OK, Status.PAIRING_REFUSED):
            raise FrameError(f"pair done cannot carry status {self.status.name.lower()}")

    @classmethod
    def stored(cls) -> PairDone:
        return cls(Status.OK, PairDoneReason.STORED)

    @classmethod
    def refused(cls, reason: PairDoneReason) -> PairDone:
        return cls(Status.PAIRING_REFUSED, reason)

    def encode(self) -> bytes:
        return bytes((FrameType.PAIR_DONE, self.status, self.reason))


@dataclass(frozen=True, slots=True)
class SessionOpen:
    key_id: bytes
    nonce: bytes

    def encode(self) -> bytes:
        return bytes((FrameType.SESSION_OPEN,)) + self.key_id + self.nonce


@dataclass(frozen=True, slots=True)
class SessionAccept:
    status: Status
    nonce: bytes = b""
    #: the device's status block sealed under the new device→central key, counter 0
    box: bytes = b""

    @property
    def header(self) -> bytes:
        """The associated data of ``box``."""
        return bytes((FrameType.SESSION_ACCEPT, self.status)) + self.nonce

    def encode(self) -> bytes:
        return self.header + self.box


@dataclass(frozen=True, slots=True)
class Sealed:
    type: FrameType  # COMMAND, RESPONSE, EVENT, PAIRING or REMOVE_PAIRING
    counter: int
    box: bytes

    @property
    def header(self) -> bytes:
        """The associated data of ``box``."""
        return bytes((self.type,)) + self.counter.to_bytes(4, "big")

    def encode(self) -> bytes:
        return self.header + self.box


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    status: Status

    def encode(self) -> bytes:
        return bytes((FrameType.ERROR, self.status))


Frame = (
    PairRequest | PairResponse | PairNonce | PairReveal | PairDone | SessionOpen | SessionAccept
    | Sealed | ErrorFrame
)

_SEALED_BODY: Final = {
    FrameType.COMMAND: _CMD.size,
    FrameType.RESPONSE: _RESP.size + 4,
    FrameType.EVENT: 4,
    FrameType.PAIRING: _ENTRY.size,
    FrameType.REMOVE_PAIRING: KEY_ID_LEN,
}


def _status(b: int) -> Status:
    try:
        return Status(b)
    except ValueError:
        raise FrameError(f"unknown status {b}") from None


def _exact(data: bytes, n: int, what: str) -> None:
    if len(data) != n:
        raise FrameError(f"{what} frame is {n} bytes, not {len(data)}")


def decode_frame(data: bytes) -> Frame:
    """Strictly decode one control-point frame; any defect is a :class:`FrameError`."""
    if not data:
        raise FrameError("empty frame")
    if len(data) > MAX_FRAME:
        raise FrameError(f"frame of {len(data)} bytes exceeds {MAX_FRAME}")
    try:
        t = FrameType(data[0])
    except ValueError:
        raise FrameError(f"unknown frame type {data[0]:#04x}") from None
    if t is FrameType.PAIR_REQUEST:
        _exact(data, 1 + KEY_LEN, "pair request")
        return PairRequest(data[1:])
    if t is FrameType.ERROR:
        _exact(data, 2, "error")
        status = _status(data[1])
        if status is Status.OK:
            raise FrameError("an error frame cannot carry status ok")
        return ErrorFrame(status)
    if t is FrameType.PAIR_NONCE:
        _exact(data, 1 + NONCE_LEN, "pair nonce")
        return PairNonce(data[1:])
    if t is FrameType.PAIR_DONE:
        _exact(data, 3, "pair done")
        try:
            reason = PairDoneReason(data[2])
        except ValueError:
            raise FrameError(f"unknown pair done reason {data[2]}") from None
        return PairDone(_status(data[1]), reason)
    if t in (FrameType.PAIR_RESPONSE, FrameType.PAIR_REVEAL, FrameType.SESSION_ACCEPT):
        if len(data) < 2:
            raise FrameError(f"{t.name.lower()} frame without status")
        status = _status(data[1])
        if status is not Status.OK:
            _exact(data, 2, f"refusing {t.name.lower()}")
            if t is FrameType.PAIR_RESPONSE:
                return PairResponse(status)
            return PairReveal(status) if t is FrameType.PAIR_REVEAL else SessionAccept(status)
        if t is FrameType.PAIR_RESPONSE:
            _exact(data, 2 + KEY_LEN + COMMIT_LEN, "pair response")
            return PairResponse(status, data[2 : 2 + KEY_LEN], data[2 + KEY_LEN :])
        if t is FrameType.PAIR_REVEAL:
            _exact(data, 2 + NONCE_LEN + CONFIRM_LEN, "pair reveal")
            return PairReveal(status, data[2 : 2 + NONCE_LEN], data[2 + NONCE_LEN :])
        _exact(data, 2 + NONCE_LEN + 4 + TAG_LEN, "session accept")
        return SessionAccept(status, data[2 : 2 + NONCE_LEN], data[2 + NONCE_LEN :])
    if t is FrameType.SESSION_OPEN:
        _exact(data, 1 + KEY_ID_LEN + NONCE_LEN, "session open")
        return SessionOpen(data[1 : 1 + KEY_ID_LEN], data[1 + KEY_ID_LEN :])
    _exact(data, 5 + _SEALED_BODY[t] + TAG_LEN, t.name.lower())
    return Sealed(t, int.from_bytes(data[1:5], "big"), data[5:])
