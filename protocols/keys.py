"""Ed25519 key helpers shared by tokens, control messages and phone proofs."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = ["kid_of", "raw_public"]


def raw_public(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    """The raw 32-byte public key."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)


def kid_of(key: Ed25519PublicKey | Ed25519PrivateKey | bytes) -> bytes:
    """CONTRACT §2: the first 8 bytes of SHA-256 of the raw 32-byte public key."""
    raw = key if isinstance(key, bytes) else raw_public(key)
    return hashlib.sha256(raw).digest()[:8]
