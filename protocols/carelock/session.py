"""carelock pairing and sessions as sans-I/O state machines, one per side.

The driver holds a :class:`CentralSession` per connection, the device a
:class:`PeripheralSession`; both turn frames into values and values into frames and
keep the counters. Neither reads a socket or a clock.
"""

from __future__ import annotations

import hmac
import os
from typing import Final, TypeVar

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from protocols.errors import FrameError

from .crypto import (
    MAX_COUNTER,
    Pairing,
    commitment,
    confirm_tag,
    derive_pair_key,
    key_id_of,
    open_box,
    pairing_code,
    raw_x25519,
    seal,
    session_keys,
)
from .frames import (
    NONCE_LEN,
    AuthenticationFailed,
    CommandBody,
    ErrorFrame,
    EventBody,
    FrameType,
    NotConfirmed,
    Opcode,
    PairDone,
    PairingEntry,
    PairNonce,
    PairRequest,
    PairResponse,
    PairReveal,
    Refused,
    RemovePairingBody,
    Replayed,
    ResponseBody,
    Result,
    Sealed,
    SessionAccept,
    SessionOpen,
    Status,
    StatusBlock,
    decode_frame,
)

__all__ = [
    "CONFIRM_TIMEOUT",
    "CentralPairing",
    "CentralSession",
    "DevicePairing",
    "PeripheralSession",
]

#: seconds a device holds a revealed pairing pending, its code on the display, for a
#: person to confirm it there (the button); then it refuses it (PAIR_DONE, timed out)
CONFIRM_TIMEOUT: Final = 60.0

#: sealed frames only a central sends
_FROM_CENTRAL = (FrameType.COMMAND, FrameType.REMOVE_PAIRING)


_F = TypeVar("_F")


def _pairing_frame(data: bytes, kind: type[_F], what: str) -> _F:
    """The device's next pairing frame, of ``kind``; an ERROR frame is a refusal."""
    frame = decode_frame(data)
    if isinstance(frame, ErrorFrame):
        raise Refused(frame.status, "pairing")
    if not isinstance(frame, kind):
        raise FrameError(f"expected {what}, got {type(frame).__name__}")
    return frame


class CentralPairing:
    """The installer's side of pairing: request, then (after the device committed) the
    central's nonce, then the device's reveal (both sides now show the code), then the
    device's PAIR_DONE: whether a person confirmed the code on the device. See :mod:`.crypto`."""

    def __init__(self, priv: X25519PrivateKey | None = None, *, nonce: bytes | None = None) -> None:
        self._priv = priv or X25519PrivateKey.generate()
        self.central_pub = raw_x25519(self._priv)
        self._nonce = nonce or os.urandom(NONCE_LEN)
        self._device_pub: bytes | None = None
        self._commitment = b""
        self._revealed = False

    def request(self) -> bytes:
        return PairRequest(self.central_pub).encode()

    def committed(self, data: bytes) -> bytes:
        """The device's public key and commitment; returns the central's nonce frame."""
        frame = _pairing_frame(data, PairResponse, "a pair response")
        if frame.status is not Status.OK:
            raise Refused(frame.status, "pairing")
        self._device_pub, self._commitment = frame.device_pub, frame.commitment
        return PairNonce(self._nonce).encode()

    def finish(self, data: bytes) -> Pairing:
        """The device's reveal: its nonce must open its commitment, its confirm verify."""
        if self._device_pub is None:
            raise FrameError("no pair response yet")
        frame = _pairing_frame(data, PairReveal, "a pair reveal")
        if frame.status is not Status.OK:
            raise Refused(frame.status, "pairing")
        device_pub, nc, nd = self._device_pub, self._nonce, frame.nonce
        if not _equal(commitment(nd, device_pub, self.central_pub), self._commitment):
            raise AuthenticationFailed(
                "the device's nonce does not open its commitment (a man in the middle?)"
            )
        key = derive_pair_key(
            self._priv, device_pub, self.central_pub, device_pub, central_nonce=nc, device_nonce=nd
        )
        if not _equal(confirm_tag(key, self.central_pub, device_pub, nc, nd), frame.confirm):
            raise AuthenticationFailed("pairing confirmation does not verify")
        code = pairing_code(self.central_pub, device_pub, nc, nd)
        self._revealed = True
        return Pairing(key_id_of(self.central_pub), key, code)

    def done(self, data: bytes) -> None:
        """The device's PAIR_DONE: returns when it stored the pairing (confirmed on the
        device); raises :class:`NotConfirmed` (with the reason) when it did not."""
        if not self._revealed:
            raise FrameError("no pair reveal yet")
        frame = _pairing_frame(data, PairDone, "a pair done")
        if frame.status is not Status.OK:
            raise NotConfirmed(frame.reason)


class DevicePairing:
    """The device's side of one pairing: commit on the request, reveal on the nonce."""

    def __init__(
        self,
        request: PairRequest,
        priv: X25519PrivateKey | None = None,
        *,
        nonce: bytes | None = None,
    ) -> None:
        self._priv = priv or X25519PrivateKey.generate()
        self.central_pub = request.central_pub
        self.device_pub = raw_x25519(self._priv)
        self._nonce = nonce or os.urandom(NONCE_LEN)
        if len(self.central_pub) != 32:
            raise FrameError("an X25519 public key is 32 bytes")

    def response(self) -> bytes:
        """The device's public key and its commitment to its nonce."""
        c = commitment(self._nonce, self.device_pub, self.central_pub)
        return PairResponse(Status.OK, self.device_pub, c).encode()

    def reveal(self, frame: PairNonce) -> tuple[bytes, Pairing]:
        """Given the central's nonce: the reveal frame and the pairing it makes."""
        nc, nd = frame.nonce, self._nonce
        key = derive_pair_key(
            self._priv,
            self.central_pub,
            self.central_pub,
            self.device_pub,
            central_nonce=nc,
            device_nonce=nd,
        )
        confirm = confirm_tag(key, self.central_pub, self.device_pub, nc, nd)
        code = pairing_code(self.central_pub, self.device_pub, nc, nd)
        return (
            PairReveal(Status.OK, nd, confirm).encode(),
            Pairing(key_id_of(self.central_pub), key, code),
        )


def _equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


class CentralSession:
    """The driver's side of one connection: open, then commands and their answers."""

    def __init__(self, pair_key: bytes, key_id: bytes, *, nonce: bytes | None = None) -> None:
        self._pair_key = pair_key
        self._key_id = key_id
        self._nonce = nonce or os.urandom(NONCE_LEN)
        self._send_key = b""
        self._recv_key = b""
        self._sent = 0  # last counter sent (central → device)
        self._received = 0  # last counter accepted (device → central)

    @property
    def is_open(self) -> bool:
        return bool(self._send_key)

    def open_frame(self) -> bytes:
        return SessionOpen(self._key_id, self._nonce).encode()

    def accept(self, data: bytes) -> StatusBlock:
        """Check the device's session accept; derive the keys; return the device's status."""
        frame = decode_frame(data)
        if isinstance(frame, ErrorFrame):
            raise Refused(frame.status, "session")
        if not isinstance(frame, SessionAccept):
            raise FrameError(f"expected a session accept, got {type(frame).__name__}")
        if frame.status is not Status.OK:
            raise Refused(frame.status, "session")
        send, recv = session_keys(self._pair_key, self._key_id, self._nonce, frame.nonce)
        status = StatusBlock.decode(open_box(recv, 0, frame.header, frame.box))
        self._send_key, self._recv_key = send, recv
        return status

    def command(self, op: Opcode, arg: int = 0) -> tuple[int, bytes]:
        """Seal one command; returns its counter (the response names it) and the frame."""
        return self._seal(FrameType.COMMAND, CommandBody(op, arg).encode())

    def remove_pairing(self, key_id: bytes) -> tuple[int, bytes]:
        """Seal a REMOVE_PAIRING for ``key_id``; answered like a command (RESPONSE)."""
        return self._seal(FrameType.REMOVE_PAIRING, RemovePairingBody(key_id).encode())

    def _seal(self, ftype: FrameType, body: bytes) -> tuple[int, bytes]:
        if not self.is_open:
            raise FrameError("session is not open")
        if self._sent >= MAX_COUNTER:
            raise FrameError("session counter exhausted: reconnect")
        self._sent += 1
        header = Sealed(ftype, self._sent, b"").header
        return self._sent, header + seal(self._send_key, self._sent, header, body)

    def receive(self, data: bytes) -> ResponseBody | EventBody | PairingEntry:
        """Verify one frame from the device. Errors from the device raise :class:`Refused`."""
        frame = decode_frame(data)
        if isinstance(frame, ErrorFrame):
            raise Refused(frame.status, "command")
        if not isinstance(frame, Sealed) or frame.type in _FROM_CENTRAL:
            raise FrameError(f"unexpected {type(frame).__name__} from the device")
        if not self.is_open:
            raise FrameError("session is not open")
        if frame.counter <= self._received:
            raise Replayed(f"counter {frame.counter} is not above {self._received}")
        body = open_box(self._recv_key, frame.counter, frame.header, frame.box)
        self._received = frame.counter
        if frame.type is FrameType.RESPONSE:
            return ResponseBody.decode(body)
        if frame.type is FrameType.PAIRING:
            return PairingEntry.decode(body)
        return EventBody.decode(body)


class PeripheralSession:
    """The device's side of one connection."""

    def __init__(self) -> None:
        self._send_key = b""
        self._recv_key = b""
        self._sent = 0  # device → central, 0 was used by the accept
        self._received = 0

    @property
    def is_open(self) -> bool:
        return bool(self._send_key)

    def accept(
        self,
        frame: SessionOpen,
        pair_key: bytes | None,
        status: StatusBlock,
        *,
        nonce: bytes | None = None,
    ) -> bytes:
        """Answer a session open; ``pair_key`` is None when ``frame.key_id`` is not paired."""
        if pair_key is None:
            return SessionAccept(Status.UNKNOWN_KEY).encode()
        device_nonce = nonce or os.urandom(NONCE_LEN)
        recv, send = session_keys(pair_key, frame.key_id, frame.nonce, device_nonce)
        self._send_key, self._recv_key = send, recv
        self._sent = self._received = 0
        head = SessionAccept(Status.OK, device_nonce)
        return head.header + seal(send, 0, head.header, status.encode())

    def open_command(self, frame: Sealed) -> tuple[int, CommandBody | RemovePairingBody]:
        """Verify a command; returns its counter and body. Raises on replay or tampering."""
        if frame.type not in _FROM_CENTRAL:
            raise FrameError(f"a central does not send {frame.type.name}")
        if not self.is_open:
            raise Refused(Status.NO_SESSION, "command")
        if frame.counter <= self._received:
            raise Replayed(f"counter {frame.counter} is not above {self._received}")
        body = open_box(self._recv_key, frame.counter, frame.header, frame.box)
        self._received = frame.counter
        if frame.type is FrameType.REMOVE_PAIRING:
            return frame.counter, RemovePairingBody.decode(body)
        return frame.counter, CommandBody.decode(body)

    def _seal(self, ftype: FrameType, plaintext: bytes) -> bytes:
        if self._sent >= MAX_COUNTER:
            raise FrameError("session counter exhausted")
        self._sent += 1
        header = Sealed(ftype, self._sent, b"").header
        return header + seal(self._send_key, self._sent, header, plaintext)

    def response(self, reply_to: int, result: Result, status: StatusBlock) -> bytes:
        return self._seal(FrameType.RESPONSE, ResponseBody(reply_to, result, status).encode())

    def event(self, status: StatusBlock) -> bytes:
        return self._seal(FrameType.EVENT, EventBody(status).encode())

    def pairing_entry(self, entry: PairingEntry) -> bytes:
        return self._seal(FrameType.PAIRING, entry.encode())
