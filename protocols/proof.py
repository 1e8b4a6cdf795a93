"""Proof of possession for the unlock exchange (CONTRACT §3, step 3).

The phone signs, with the Ed25519 key named in its token's ``cnf``, the canonical CBOR
of ``["lockgw-unlock-v1", nonce, site, door, action]``. Binding the site, door and
action means a proof for the back door cannot open the front door; the fresh,
single-use nonce means a recorded proof cannot be replayed. A token copied to another
phone is useless without that phone's private key (CCV question 8).
"""

from __future__ import annotations

from typing import Final

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocols.errors import ProtocolError, Reason

__all__ = ["PROOF_CONTEXT", "proof_message", "sign_proof", "verify_proof"]

PROOF_CONTEXT: Final = "lockgw-unlock-v1"


def proof_message(nonce: bytes, site: str, door: str, action: str) -> bytes:
    """The exact bytes the phone signs."""
    out: bytes = cbor2.dumps([PROOF_CONTEXT, nonce, site, door, action], canonical=True)
    return out


def sign_proof(key: Ed25519PrivateKey, nonce: bytes, site: str, door: str, action: str) -> bytes:
    """The phone's 64-byte signature for one challenge."""
    return key.sign(proof_message(nonce, site, door, action))


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
        key = (
            Ed25519PublicKey.from_public_bytes(holder_key)
            if isinstance(holder_key, bytes)
            else holder_key
        )
        key.verify(sig, proof_message(nonce, site, door, action))
    except (InvalidSignature, ValueError):
        raise ProtocolError(
            Reason.BAD_PROOF, "the proof is not signed by the token's phone key"
        ) from None
