"""The phone ↔ gateway unlock exchange (CONTRACT §3): frames, framing, BLE chunks.

``lockgw-unlock-v2`` (the default; ``protocols/exchange.py`` has its cryptography)::

    phone → gateway  {"t": "hello2", "sealed": bstr}      HPKE-sealed v1 hello (below)
    gateway → phone  {"t": "challenge2", "nonce": bstr(16), "sig": bstr(64)}
    phone → gateway  {"t": "proof", "sig": bstr(64)}
    gateway → phone  {"t": "result2", "granted": bool, "reason": text, "event": text, "sig": bstr(64)}

``lockgw-unlock-v1`` (CONTRACT §3 as first written; only where ``[phone_link] accept_v1``)::

    phone → gateway  {"t": "hello", "token": bstr | "token_ref": bstr(16), "door": text, "action": text}
    gateway → phone  {"t": "challenge", "nonce": bstr(16), "site": text}
    phone → gateway  {"t": "proof", "sig": bstr(64)}
    gateway → phone  {"t": "result", "granted": bool, "reason": text, "event": text}

On the loopback TCP transport each frame is a 4-byte big-endian length and the CBOR
bytes (:func:`pack`, :class:`FrameBuffer`); over BLE GATT the same CBOR is cut into
chunks (:func:`chunk`, :class:`Reassembler`). Frames over :data:`MAX_FRAME` bytes
close the connection. Everything here is pure: bytes in, values out.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Final

import cbor2

from protocols import strict_cbor
from protocols.errors import FrameError

__all__ = [
    "ACTIONS",
    "ATT_MIN_MTU",
    "MAX_FRAME",
    "PHONE_SERVICE_UUID",
    "RX_CHAR_UUID",
    "TX_CHAR_UUID",
    "Challenge",
    "FrameBuffer",
    "Hello",
    "PhoneFrame",
    "Proof",
    "Reassembler",
    "Result",
    "SealedHello",
    "SignedChallenge",
    "SignedResult",
    "chunk",
    "decode_frame",
    "encode_frame",
    "pack",
]

MAX_FRAME: Final = 4096
#: a token is at most 1024 bytes (CONTRACT §2); ids are short
_MAX_TOKEN: Final = 1024
_MAX_TEXT: Final = 64
ACTIONS: Final = frozenset({"unlock", "unlatch", "open"})
_LEN = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class Hello:
    door: str
    action: str
    token: bytes | None = None
    token_ref: bytes | None = None

    def to_map(self) -> dict[str, Any]:
        out: dict[str, Any] = {"t": "hello", "door": self.door, "action": self.action}
        if self.token is not None:
            out["token"] = self.token
        if self.token_ref is not None:
            out["token_ref"] = self.token_ref
        return out


@dataclass(frozen=True, slots=True)
class Challenge:
    nonce: bytes
    site: str

    def to_map(self) -> dict[str, Any]:
        return {"t": "challenge", "nonce": self.nonce, "site": self.site}


@dataclass(frozen=True, slots=True)
class Proof:
    sig: bytes

    def to_map(self) -> dict[str, Any]:
        return {"t": "proof", "sig": self.sig}


@dataclass(frozen=True, slots=True)
class Result:
    granted: bool
    reason: str
    event: str

    def to_map(self) -> dict[str, Any]:
        return {"t": "result", "granted": self.granted, "reason": self.reason, "event": self.event}


@dataclass(frozen=True, slots=True)
class SealedHello:
    """v2: an HPKE ciphertext (enc ‖ ct) of a v1 :class:`Hello` frame."""

    sealed: bytes

    def to_map(self) -> dict[str, Any]:
        return {"t": "hello2", "sealed": self.sealed}


@dataclass(frozen=True, slots=True)
class SignedChallenge:
    """v2: a nonce signed by the site's sign key over the sealed hello's hash."""

    nonce: bytes
    sig: bytes

    def to_map(self) -> dict[str, Any]:
        return {"t": "challenge2", "nonce": self.nonce, "sig": self.sig}


@dataclass(frozen=True, slots=True)
class SignedResult:
    """v2: the result, signed by the site's sign key over the sealed hello's hash."""

    granted: bool
    reason: str
    event: str
    sig: bytes

    def to_map(self) -> dict[str, Any]:
        return {
            "t": "result2",
            "granted": self.granted,
            "reason": self.reason,
            "event": self.event,
            "sig": self.sig,
        }

    def result(self) -> Result:
        return Result(granted=self.granted, reason=self.reason, event=self.event)


PhoneFrame = Hello | Challenge | Proof | Result | SealedHello | SignedChallenge | SignedResult

#: the sealed hello: 32-byte HPKE enc, the padded v1 hello (≤ 1536 bytes), 16-byte tag
MAX_SEALED: Final = 1600
_MIN_SEALED: Final = 32 + 16 + 1


def encode_frame(frame: PhoneFrame) -> bytes:
    """Canonical CBOR of one frame (no length prefix)."""
    data: bytes = cbor2.dumps(frame.to_map(), canonical=True)
    if len(data) > MAX_FRAME:
        raise FrameError(f"frame of {len(data)} bytes exceeds {MAX_FRAME}")
    return data


def _text(m: dict[Any, Any], key: str, limit: int = _MAX_TEXT) -> str:
    v = m.get(key)
    if not isinstance(v, str) or not 0 < len(v) <= limit:
        raise FrameError(f"{key!r} must be text of 1..{limit} characters")
    return v


def _bytes(
    m: dict[Any, Any], key: str, *, exact: int | None = None, limit: int = MAX_FRAME
) -> bytes:
    v = m.get(key)
    if not isinstance(v, bytes):
        raise FrameError(f"{key!r} must be a byte string")
    if exact is not None and len(v) != exact:
        raise FrameError(f"{key!r} must be {exact} bytes, not {len(v)}")
    if not 0 < len(v) <= limit:
        raise FrameError(f"{key!r} must be 1..{limit} bytes")
    return v


def _only(m: dict[Any, Any], allowed: set[str]) -> None:
    extra = set(m) - allowed
    if extra:
        raise FrameError(f"unexpected keys {sorted(map(repr, extra))}")


def decode_frame(data: bytes) -> PhoneFrame:
    """Strictly decode one frame; any defect is a :class:`FrameError` (reason malformed)."""
    if len(data) > MAX_FRAME:
        raise FrameError(f"frame of {len(data)} bytes exceeds {MAX_FRAME}")
    try:
        m = strict_cbor.loads(data)
    except strict_cbor.StrictCBORError as exc:
        raise FrameError(f"not plain CBOR: {exc}") from None
    if not isinstance(m, dict):
        raise FrameError("a frame is a CBOR map")
    t = m.get("t")
    if t == "hello":
        _only(m, {"t", "door", "action", "token", "token_ref"})
        action = _text(m, "action")
        if action not in ACTIONS:
            raise FrameError(f"action must be one of {sorted(ACTIONS)}")
        has_token, has_ref = "token" in m, "token_ref" in m
        if has_token == has_ref:
            raise FrameError("hello carries exactly one of 'token' and 'token_ref'")
        return Hello(
            door=_text(m, "door"),
            action=action,
            token=_bytes(m, "token", limit=_MAX_TOKEN) if has_token else None,
            token_ref=_bytes(m, "token_ref", exact=16) if has_ref else None,
        )
    if t == "challenge":
        _only(m, {"t", "nonce", "site"})
        return Challenge(nonce=_bytes(m, "nonce", exact=16), site=_text(m, "site"))
    if t == "proof":
        _only(m, {"t", "sig"})
        return Proof(sig=_bytes(m, "sig", exact=64))
    if t == "result":
        _only(m, {"t", "granted", "reason", "event"})
        granted = m.get("granted")
        if not isinstance(granted, bool):
            raise FrameError("'granted' must be a boolean")
        return Result(granted=granted, reason=_text(m, "reason"), event=_text(m, "event", 128))
    if t == "hello2":
        _only(m, {"t", "sealed"})
        sealed = _bytes(m, "sealed", limit=MAX_SEALED)
        if len(sealed) < _MIN_SEALED:
            raise FrameError(f"'sealed' must be at least {_MIN_SEALED} bytes (enc, tag)")
        return SealedHello(sealed=sealed)
    if t == "challenge2":
        _only(m, {"t", "nonce", "sig"})
        return SignedChallenge(nonce=_bytes(m, "nonce", exact=16), sig=_bytes(m, "sig", exact=64))
    if t == "result2":
        _only(m, {"t", "granted", "reason", "event", "sig"})
        granted = m.get("granted")
        if not isinstance(granted, bool):
            raise FrameError("'granted' must be a boolean")
        return SignedResult(
            granted=granted,
            reason=_text(m, "reason"),
            event=_text(m, "event", 128),
            sig=_bytes(m, "sig", exact=64),
        )
    raise FrameError(
        f"unknown frame type {t!r}" if isinstance(t, str) else "missing frame type 't'"
    )


def pack(body: bytes) -> bytes:
    """Loopback TCP framing: 4-byte big-endian length, then the CBOR bytes."""
    if len(body) > MAX_FRAME:
        raise FrameError(f"frame of {len(body)} bytes exceeds {MAX_FRAME}")
    return _LEN.pack(len(body)) + body


class FrameBuffer:
    """Incremental parser for the loopback framing: ``feed(bytes)`` then ``frames()``.

    A declared length over :data:`MAX_FRAME` raises :class:`FrameError` at once, before
    the body arrives, so the connection can be closed without buffering it.
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_frame(self) -> bytes | None:
        if len(self._buf) < _LEN.size:
            return None
        (n,) = _LEN.unpack_from(self._buf)
        if n > MAX_FRAME:
            raise FrameError(f"declared frame length {n} exceeds {MAX_FRAME}")
        if len(self._buf) < _LEN.size + n:
            return None
        body = bytes(self._buf[_LEN.size : _LEN.size + n])
        del self._buf[: _LEN.size + n]
        return body


# -- BLE chunks ---------------------------------------------------------------------------
#: the BLE GATT transport (``protocols/README.md``): the phone writes chunks to RX and
#: reads the gateway's chunks from TX; both are answered per central
PHONE_SERVICE_UUID: Final = "8e5c0001-6c6f-636b-6777-000000000001"
RX_CHAR_UUID: Final = "8e5c0002-6c6f-636b-6777-000000000001"
TX_CHAR_UUID: Final = "8e5c0003-6c6f-636b-6777-000000000001"
#: the ATT MTU every BLE link has before an exchange raises it (Core spec, Vol 3 Part F 3.2.8)
ATT_MIN_MTU: Final = 23
#: chunk header byte: bit 7 = first chunk of a frame, bit 6 = last chunk, bits 0-5 = a
#: sequence counter modulo 64 so a lost or repeated chunk is detected.
_MAX_ATTRIBUTE: Final = 512
_FIRST: Final = 0x80
_LAST: Final = 0x40


def chunk(frame: bytes, mtu: int) -> list[bytes]:
    """Cut one CBOR frame into GATT writes / read answers of at most ``mtu - 3`` bytes
    (and never over 512, the largest attribute value ATT allows)."""
    size = min(mtu - 3, _MAX_ATTRIBUTE) - 1  # ATT header, then our 1-byte chunk header
    if size < 1:
        raise FrameError(f"MTU {mtu} too small")
    if len(frame) > MAX_FRAME:
        raise FrameError(f"frame of {len(frame)} bytes exceeds {MAX_FRAME}")
    parts = [frame[i : i + size] for i in range(0, len(frame), size)] or [b""]
    out = []
    for i, part in enumerate(parts):
        header = i % 64
        if i == 0:
            header |= _FIRST
        if i == len(parts) - 1:
            header |= _LAST
        out.append(bytes([header]) + part)
    return out


class Reassembler:
    """Collect chunks back into frames; a chunk out of order or an oversize frame raises."""

    def __init__(self) -> None:
        self._parts: list[bytes] | None = None
        self._size = 0
        self._next = 0

    def add(self, data: bytes) -> bytes | None:
        """Add one chunk; return the whole frame when its last chunk arrived."""
        if not data:
            raise FrameError("empty chunk")
        header, body = data[0], data[1:]
        counter = header & 0x3F
        if header & _FIRST:
            self._parts, self._size, self._next = [], 0, 0
        elif self._parts is None:
            raise FrameError("continuation chunk without a first chunk")
        if counter != self._next % 64:
            self._parts = None
            raise FrameError("chunk out of sequence")
        assert self._parts is not None
        self._parts.append(body)
        self._size += len(body)
        self._next += 1
        if self._size > MAX_FRAME:
            self._parts = None
            raise FrameError(f"frame exceeds {MAX_FRAME} bytes")
        if header & _LAST:
            frame = b"".join(self._parts)
            self._parts = None
            return frame
        return None
