"""carelock cryptography: pairing (X25519 → HKDF), session keys, sealing. Pure.

Pairing (once, at installation, device in pairing mode), committing before revealing
as Bluetooth LE Secure Connections' numeric comparison does (Core spec Vol 3 Part H
§2.3.5.6.2)::

    c → d   central_pub
    d → c   device_pub, commitment = HMAC-SHA256(Nd, "carelock-commit-v2" ‖ device_pub ‖ central_pub)[:16]
    c → d   Nc                                (only now: the device is bound to Nd)
    d → c   Nd, confirm                       (the central checks Nd opens the commitment)

    shared    = X25519(own_priv, peer_pub)
    pair_key  = HKDF-SHA256(shared, salt = central_pub ‖ device_pub ‖ Nc ‖ Nd,
                            info = "carelock-pair-v2", 32)
    key_id    = SHA-256(central_pub)[:8]
    confirm   = HMAC-SHA256(pair_key, "carelock-confirm-v2" ‖ central_pub ‖ device_pub ‖ Nc ‖ Nd)[:16]
    code      = HMAC-SHA256(Nc, "carelock-code-v2" ‖ central_pub ‖ device_pub ‖ Nd)[:4]
                as u32 mod 10^6 — six digits shown on both sides for the installer to compare

A man in the middle runs one pairing with each side and wins only if the two codes
match. It must commit to its nonce towards the central before it sees the central's,
and send its nonce to the device before the device reveals its own; so it cannot pick
a key or nonce after seeing both sides and searching for equal codes: its chance is
one in a million per attempt.

Session (on every connection)::

    k_c2d ‖ k_d2c = HKDF-SHA256(pair_key, salt = central_nonce ‖ device_nonce,
                                info = "carelock-session-v1" ‖ key_id, 64)

Every command, response and event is ChaCha20-Poly1305 under the key of its
direction; the 12-byte nonce is the frame's 32-bit counter, big-endian, zero-padded
on the left; the associated data is the frame header (type and counter). Fresh
nonces from both sides make every session's keys new, so a frame recorded in an
earlier session never verifies again; within a session the counters only go up.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from protocols.errors import FrameError

from .frames import COMMIT_LEN, CONFIRM_LEN, KEY_ID_LEN, KEY_LEN, NONCE_LEN, AuthenticationFailed

__all__ = [
    "MAX_COUNTER",
    "Pairing",
    "commitment",
    "confirm_tag",
    "derive_pair_key",
    "key_id_of",
    "open_box",
    "pairing_code",
    "raw_x25519",
    "seal",
    "session_keys",
]

MAX_COUNTER: Final = 0xFFFF_FFFF


def raw_x25519(priv: X25519PrivateKey) -> bytes:
    return priv.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id_of(central_pub: bytes) -> bytes:
    return hashlib.sha256(central_pub).digest()[:KEY_ID_LEN]


def commitment(device_nonce: bytes, device_pub: bytes, central_pub: bytes) -> bytes:
    mac = hmac.new(device_nonce, b"carelock-commit-v2" + device_pub + central_pub, hashlib.sha256)
    return mac.digest()[:COMMIT_LEN]


def derive_pair_key(
    priv: X25519PrivateKey,
    peer_pub: bytes,
    central_pub: bytes,
    device_pub: bytes,
    *,
    central_nonce: bytes,
    device_nonce: bytes,
) -> bytes:
    if len(peer_pub) != KEY_LEN:
        raise FrameError(f"an X25519 public key is {KEY_LEN} bytes")
    try:
        shared = priv.exchange(X25519PublicKey.from_public_bytes(peer_pub))
    except ValueError as exc:  # all-zero shared secret (low-order point)
        raise FrameError(f"unusable X25519 public key: {exc}") from None
    return HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_LEN,
        salt=central_pub + device_pub + central_nonce + device_nonce,
        info=b"carelock-pair-v2",
    ).derive(shared)


def confirm_tag(
    pair_key: bytes, central_pub: bytes, device_pub: bytes, central_nonce: bytes, device_nonce: bytes
) -> bytes:
    msg = b"carelock-confirm-v2" + central_pub + device_pub + central_nonce + device_nonce
    return hmac.new(pair_key, msg, hashlib.sha256).digest()[:CONFIRM_LEN]


def pairing_code(
    central_pub: bytes, device_pub: bytes, central_nonce: bytes, device_nonce: bytes
) -> str:
    msg = b"carelock-code-v2" + central_pub + device_pub + device_nonce
    digest = hmac.new(central_nonce, msg, hashlib.sha256).digest()
    return f"{int.from_bytes(digest[:4], 'big') % 1_000_000:06d}"


@dataclass(frozen=True, slots=True)
class Pairing:
    """What a successful pairing leaves on each side."""

    key_id: bytes
    pair_key: bytes
    code: str


def session_keys(
    pair_key: bytes, key_id: bytes, central_nonce: bytes, device_nonce: bytes
) -> tuple[bytes, bytes]:
    """(central→device key, device→central key) for one connection."""
    if len(central_nonce) != NONCE_LEN or len(device_nonce) != NONCE_LEN:
        raise FrameError(f"session nonces are {NONCE_LEN} bytes")
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=2 * KEY_LEN,
        salt=central_nonce + device_nonce,
        info=b"carelock-session-v1" + key_id,
    ).derive(pair_key)
    return okm[:KEY_LEN], okm[KEY_LEN:]


def _nonce(counter: int) -> bytes:
    if not 0 <= counter <= MAX_COUNTER:
        raise FrameError(f"counter {counter} is outside 0..{MAX_COUNTER}")
    return counter.to_bytes(12, "big")


def seal(key: bytes, counter: int, header: bytes, plaintext: bytes) -> bytes:
    return ChaCha20Poly1305(key).encrypt(_nonce(counter), plaintext, header)


def open_box(key: bytes, counter: int, header: bytes, box: bytes) -> bytes:
    try:
        return ChaCha20Poly1305(key).decrypt(_nonce(counter), box, header)
    except InvalidTag:
        raise AuthenticationFailed(
            "sealed frame failed authentication (tampered or wrong key)"
        ) from None
