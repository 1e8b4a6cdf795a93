"""Proof of possession for the unlock exchange (CONTRACT §3, step 3).

The phone signs, with the Ed25519 key named in its token's ``cnf``, the canonical CBOR
of ``["lockgw-unlock-v1", nonce, site, door, action]``. Binding the site, door and
action means a proof for the back door cannot open the front door; the fresh,
single-use nonce means a recorded proof cannot be replayed. A token copied to another
phone is useless without that phone's private key (CCV question 8).
"""

from __future__ import annotations

from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocols.errors import ProtocolError, Reason

__all__ = [
    "PROOF_CONTEXT",
    "PROOF_CONTEXT_V2",
    "phone_key",
    "proof_message",
    "proof_message_v2",
    "sign_proof",
    "verify_proof",
]

PROOF_CONTEXT: Final = "lockgw-unlock-v1"
PROOF_CONTEXT_V2: Final = "lockgw-unlock-v2"


def _head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes((major | n,))
    if n < 0x100:
        return bytes((major | 24, n))
    if n < 0x10000:
        return bytes((major | 25,)) + n.to_bytes(2, "big")
    return bytes((major | 26,)) + n.to_bytes(4, "big")


def _text(s: str) -> bytes:
    b = s.encode("utf-8")
    return _head(0x60, len(b)) + b


_PREFIX: Final = b"\x85" + _text(PROOF_CONTEXT)  # array(5), then the context string


#: (site, door, action) → their encoding: a gateway has a few doors and actions
_TAILS: dict[tuple[str, str, str], bytes] = {}


def proof_message(nonce: bytes, site: str, door: str, action: str) -> bytes:
    """The exact bytes the phone signs: canonical CBOR of
    ``["lockgw-unlock-v1", nonce, site, door, action]`` (encoded by hand: this is on the
    gateway's hot path, and the tests pin it against cbor2's canonical encoding)."""
    key = (site, door, action)
    tail = _TAILS.get(key)
    if tail is None:
        tail = _text(site) + _text(door) + _text(action)
        if len(_TAILS) < 1024:
            _TAILS[key] = tail
    return b"".join((_PREFIX, _head(0x40, len(nonce)), nonce, tail))


_PREFIX_V2: Final = b"\x87" + _text(PROOF_CONTEXT_V2)  # array(7), then the context string


def proof_message_v2(
    nonce: bytes, site: str, door: str, action: str, *, token_hash: bytes, hello_hash: bytes
) -> bytes:
    """``lockgw-unlock-v2``: canonical CBOR of ``["lockgw-unlock-v2", nonce, site, door,
    action, token_hash, hello_hash]`` — the v1 binding plus SHA-256 of the token (or
    token_ref) the hello presented and SHA-256 of the sealed hello the gateway received,
    so a token swapped in the middle, or a hello replaced, makes the proof fail."""
    key = (site, door, action)
    tail = _TAILS.get(key)
    if tail is None:
        tail = _text(site) + _text(door) + _text(action)
        if len(_TAILS) < 1024:
            _TAILS[key] = tail
    return b"".join(
        (
            _PREFIX_V2,
            _head(0x40, len(nonce)),
            nonce,
            tail,
            _head(0x40, len(token_hash)),
            token_hash,
            _head(0x40, len(hello_hash)),
            hello_hash,
        )
    )


def sign_proof(key: Ed25519PrivateKey, nonce: bytes, site: str, door: str, action: str) -> bytes:
    """The phone's 64-byte signature for one challenge."""
    return key.sign(proof_message(nonce, site, door, action))


#: raw phone key → key object; a home sees a handful of phones, parsing one costs µs
_HOLDERS: dict[bytes, Ed25519PublicKey] = {}


def phone_key(raw: bytes) -> Ed25519PublicKey:
    """The phone's key object for a token's raw ``cnf`` key (parsed once per phone);
    ValueError when it is not an Ed25519 public key."""
    key = _HOLDERS.get(raw)
    if key is None:
        key = Ed25519PublicKey.from_public_bytes(raw)  # ValueError when not 32 bytes
        if len(_HOLDERS) >= 1024:
            _HOLDERS.clear()
        _HOLDERS[raw] = key
    return key


def verify_proof(
    holder_key: Ed25519PublicKey | bytes,
    sig: bytes,
    *,
    nonce: bytes,
    site: str,
    door: str,
    action: str,
) -> None:
    """Raise :class:`ProtocolError` ``bad_proof`` unless ``sig`` is the holder's proof."""
    if type(sig) is not bytes or len(sig) != 64:
        raise ProtocolError(Reason.BAD_PROOF, "a proof is a 64-byte Ed25519 signature")
    try:
        key = phone_key(holder_key) if isinstance(holder_key, bytes) else holder_key
        key.verify(sig, proof_message(nonce, site, door, action))
    except (InvalidSignature, ValueError):
        raise ProtocolError(
            Reason.BAD_PROOF, "the proof is not signed by the token's phone key"
        ) from None
