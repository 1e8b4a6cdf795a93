"""Nuki frames: the unencrypted and the encrypted transfer format, and the crypto under them.

Unencrypted (pairing GDIO)::

    command id u16 LE | payload | CRC-16/CCITT-FALSE u16 LE (over command id + payload)

Encrypted (USDIO)::

    ADATA: nonce (24) | authorization id u32 (4) | length u16 LE of the ciphertext (2)
    then:  XSalsa20-Poly1305 secretbox(PDATA, nonce, shared key)  (16-byte MAC + len(PDATA))
    PDATA: authorization id (4) | command id u16 LE | payload | CRC u16 LE (over all before it)

The shared key is NaCl ``crypto_box_beforenm(their_public, my_secret)``: X25519, then
HSalsa20 with a zero nonce. Authenticators in pairing are HMAC-SHA256 under that key.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from typing import Final

import nacl.exceptions
import nacl.public
import nacl.secret
import nacl.utils
from nacl.bindings import crypto_box_beforenm

from protocols.errors import FrameError
from protocols.nuki.constants import Command, ErrorCode

__all__ = [
    "MAX_FRAME",
    "NONCE_SIZE",
    "EncryptedEnvelope",
    "KeyPair",
    "Message",
    "NukiFrameError",
    "authenticator",
    "crc16",
    "decode_plain",
    "encode_encrypted",
    "encode_plain",
    "open_envelope",
    "parse_envelope",
    "shared_key",
    "verify_authenticator",
]

NONCE_SIZE: Final = 24
AUTH_ID_SIZE: Final = 4
MAC_SIZE: Final = 16
#: no Nuki message we speak is longer; anything bigger is refused before any work
MAX_FRAME: Final = 512
_ADATA: Final = NONCE_SIZE + AUTH_ID_SIZE + 2


class NukiFrameError(FrameError):
    """A Nuki frame that does not decode; ``code`` is the Nuki error code a lock answers with."""

    def __init__(self, detail: str, code: ErrorCode = ErrorCode.ERROR_UNKNOWN) -> None:
        super().__init__(f"nuki: {detail}")
        self.code = code


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final xor."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded command. ``auth_id`` is ``None`` for an unencrypted frame."""

    command: int
    payload: bytes
    auth_id: bytes | None = None

    @property
    def known_command(self) -> Command | None:
        try:
            return Command(self.command)
        except ValueError:
            return None


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<H", crc16(body))


def _check_crc(data: bytes) -> bytes:
    if len(data) < 4:
        raise NukiFrameError(f"frame of {len(data)} bytes is too short", ErrorCode.ERROR_BAD_LENGTH)
    body, (crc,) = data[:-2], struct.unpack("<H", data[-2:])
    if crc16(body) != crc:
        raise NukiFrameError("CRC does not match", ErrorCode.ERROR_BAD_CRC)
    return body


def encode_plain(command: int, payload: bytes = b"") -> bytes:
    return _with_crc(struct.pack("<H", command) + payload)


def decode_plain(data: bytes) -> Message:
    if len(data) > MAX_FRAME:
        raise NukiFrameError(f"frame of {len(data)} bytes is too long", ErrorCode.ERROR_BAD_LENGTH)
    body = _check_crc(data)
    (command,) = struct.unpack("<H", body[:2])
    return Message(command, bytes(body[2:]))


# -- crypto --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class KeyPair:
    """An X25519 key pair (raw 32-byte keys)."""

    secret: bytes
    public: bytes

    @classmethod
    def generate(cls) -> KeyPair:
        sk = nacl.public.PrivateKey.generate()
        return cls(bytes(sk), bytes(sk.public_key))

    @classmethod
    def from_secret(cls, secret: bytes) -> KeyPair:
        sk = nacl.public.PrivateKey(secret)
        return cls(bytes(sk), bytes(sk.public_key))


def shared_key(their_public: bytes, my_secret: bytes) -> bytes:
    """NaCl ``crypto_box_beforenm``: X25519 then HSalsa20 — the long-term key of a pairing."""
    if len(their_public) != 32 or len(my_secret) != 32:
        raise NukiFrameError("keys are 32 bytes", ErrorCode.P_ERROR_BAD_PARAMETER)
    return bytes(crypto_box_beforenm(their_public, my_secret))


def authenticator(key: bytes, *parts: bytes) -> bytes:
    """HMAC-SHA256 under the shared key over the concatenated parts."""
    return hmac.new(key, b"".join(parts), hashlib.sha256).digest()


def verify_authenticator(key: bytes, given: bytes, *parts: bytes) -> bool:
    return hmac.compare_digest(authenticator(key, *parts), given)


@dataclass(frozen=True, slots=True)
class EncryptedEnvelope:
    """The ADATA of an encrypted frame and its still-sealed ciphertext."""

    nonce: bytes
    auth_id: bytes
    ciphertext: bytes


def encode_encrypted(
    key: bytes, auth_id: bytes, command: int, payload: bytes = b"", *, nonce: bytes | None = None
) -> bytes:
    if len(auth_id) != AUTH_ID_SIZE:
        raise ValueError("authorization id is 4 bytes")
    nonce = nonce if nonce is not None else nacl.utils.random(NONCE_SIZE)
    pdata = _with_crc(auth_id + struct.pack("<H", command) + payload)
    ciphertext = nacl.secret.SecretBox(key).encrypt(pdata, nonce).ciphertext
    return nonce + auth_id + struct.pack("<H", len(ciphertext)) + ciphertext


def parse_envelope(data: bytes) -> EncryptedEnvelope:
    """Split an encrypted frame without the key (the lock finds the key by ``auth_id``)."""
    if len(data) > MAX_FRAME:
        raise NukiFrameError(f"frame of {len(data)} bytes is too long", ErrorCode.ERROR_BAD_LENGTH)
    if len(data) < _ADATA + MAC_SIZE + AUTH_ID_SIZE + 4:
        raise NukiFrameError(
            f"encrypted frame of {len(data)} bytes is too short", ErrorCode.ERROR_BAD_LENGTH
        )
    (length,) = struct.unpack("<H", data[NONCE_SIZE + AUTH_ID_SIZE : _ADATA])
    if length != len(data) - _ADATA:
        raise NukiFrameError(
            f"length field says {length}, {len(data) - _ADATA} bytes follow",
            ErrorCode.ERROR_BAD_LENGTH,
        )
    return EncryptedEnvelope(
        bytes(data[:NONCE_SIZE]),
        bytes(data[NONCE_SIZE : NONCE_SIZE + AUTH_ID_SIZE]),
        bytes(data[_ADATA:]),
    )


def open_envelope(envelope: EncryptedEnvelope, key: bytes) -> Message:
    """Decrypt and check: MAC (else K_ERROR_NOT_AUTHORIZED), CRC, inner = outer auth id."""
    try:
        pdata = nacl.secret.SecretBox(key).decrypt(envelope.ciphertext, envelope.nonce)
    except nacl.exceptions.CryptoError as exc:
        raise NukiFrameError("cannot decrypt: wrong key", ErrorCode.K_ERROR_NOT_AUTHORIZED) from exc
    body = _check_crc(pdata)
    if len(body) < AUTH_ID_SIZE + 2:
        raise NukiFrameError("plaintext too short", ErrorCode.ERROR_BAD_LENGTH)
    if body[:AUTH_ID_SIZE] != envelope.auth_id:
        raise NukiFrameError("inner authorization id differs", ErrorCode.K_ERROR_NOT_AUTHORIZED)
    (command,) = struct.unpack("<H", body[AUTH_ID_SIZE : AUTH_ID_SIZE + 2])
    return Message(command, bytes(body[AUTH_ID_SIZE + 2 :]), envelope.auth_id)
