"""``lockgw-unlock-v2``: the unlock exchange with a sealed hello and a signed gateway.

The cryptography of the v2 frames in :mod:`protocols.phone`; pure (keys and bytes in,
values out). The site has two keys (``gateway/site_keys.py``): an X25519 *exchange* key
and an Ed25519 *sign* key; a phone receives their public halves with its credential.

1. The phone seals the v1 hello frame (``{"t": "hello", "door", "action", "token" |
   "token_ref"}``, canonical CBOR), as ``len (u16, big-endian) ‖ frame ‖ zero bytes`` up
   to the next multiple of 256 bytes (so a listener learns the size class, not the
   token's exact length), with HPKE (RFC 9180, base mode, single shot):
   DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305, to the site's exchange
   key, ``info`` = ``"lockgw-unlock-v2 hello " ‖ site``, empty ``aad``. It sends
   ``{"t": "hello2", "sealed": enc ‖ ct}``. ``h`` = SHA-256(sealed) names this attempt.
2. The gateway opens it (a hello that does not open is ``malformed``), and answers
   ``{"t": "challenge2", "nonce", "sig"}``, ``sig`` = Ed25519 by the site sign key over
   canonical CBOR ``["lockgw-unlock-v2 challenge", site, h, nonce]``. The phone checks
   it: only the holder of the site's sign key can answer *this* hello (an impostor
   gateway, or a relay that replaced the hello, is detected before the phone signs).
3. The phone signs with its ``cnf`` key canonical CBOR ``["lockgw-unlock-v2", nonce,
   site, door, action, SHA-256(token or token_ref as presented), h]``
   (:func:`protocols.proof.proof_message_v2`) and sends ``{"t": "proof", "sig"}``.
4. The gateway answers ``{"t": "result2", "granted", "reason", "event", "sig"}``,
   ``sig`` = Ed25519 by the site sign key over canonical CBOR
   ``["lockgw-unlock-v2 result", site, h, granted, reason, event]``.
"""

from __future__ import annotations

import hashlib
from typing import Final

import cbor2
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from protocols.advert import ADVERT_KEY_LEN
from protocols.errors import FrameError, ProtocolError, Reason
from protocols.phone import (
    Hello,
    Proof,
    Result,
    SealedHello,
    SignedChallenge,
    SignedResult,
    decode_frame,
    encode_frame,
)
from protocols.proof import PROOF_CONTEXT_V2, proof_message_v2

__all__ = [
    "SUITE",
    "VERSION",
    "GatewayExchange",
    "ImpostorError",
    "PhoneExchange",
    "challenge_message",
    "hello_hash",
    "hello_info",
    "result_message",
    "token_hash",
]

VERSION: Final = PROOF_CONTEXT_V2
#: the sealed plaintext is padded to a multiple of this many bytes
PAD: Final = 256
SUITE: Final = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)


class ImpostorError(ProtocolError):
    """The phone's view: what answered is not the site's gateway (a signature by the
    site's sign key over this very hello is missing or wrong)."""

    def __init__(self, detail: str) -> None:
        super().__init__(Reason.BAD_SIGNATURE, detail)


def hello_info(site: str) -> bytes:
    return f"{VERSION} hello {site}".encode()


def hello_hash(sealed: bytes) -> bytes:
    return hashlib.sha256(sealed).digest()


def token_hash(hello: Hello) -> bytes:
    """SHA-256 of what the hello presented: the token's bytes, or the 16-byte token_ref."""
    presented = hello.token if hello.token is not None else hello.token_ref
    assert presented is not None  # decode_frame guarantees exactly one
    return hashlib.sha256(presented).digest()


def _cbor(value: list[object]) -> bytes:
    out: bytes = cbor2.dumps(value, canonical=True)
    return out


def challenge_message(site: str, h: bytes, nonce: bytes) -> bytes:
    return _cbor([f"{VERSION} challenge", site, h, nonce])


def result_message(site: str, h: bytes, granted: bool, reason: str, event: str) -> bytes:
    return _cbor([f"{VERSION} result", site, h, granted, reason, event])


class GatewayExchange:
    """The gateway's side: open hellos, sign challenges and results."""

    def __init__(
        self,
        site: str,
        sign_key: Ed25519PrivateKey,
        exchange_key: X25519PrivateKey,
        *,
        accept_v1: bool = False,
    ) -> None:
        self.site = site
        self.sign_key = sign_key
        self.exchange_key = exchange_key
        self.accept_v1 = accept_v1
        self._info = hello_info(site)

    def open_hello(self, frame: SealedHello) -> tuple[Hello, bytes]:
        """The hello inside, and ``h``; :class:`FrameError` when it does not open here
        (sealed to another site or key, tampered with) or holds no valid hello."""
        try:
            plain = SUITE.decrypt(frame.sealed, self.exchange_key, info=self._info)
        except (InvalidTag, ValueError):
            raise FrameError(
                "the sealed hello does not open with this site's exchange key"
            ) from None
        n = int.from_bytes(plain[:2], "big")
        pad = len(plain) - 2 - n
        if pad < 0 or len(plain) % PAD or plain.count(0, 2 + n) != pad:  # zeros (in C)
            raise FrameError("the sealed hello's length or padding is wrong")
        hello = decode_frame(plain[2 : 2 + n])
        if not isinstance(hello, Hello):
            raise FrameError(f"the sealed hello holds a {type(hello).__name__.lower()} frame")
        return hello, hello_hash(frame.sealed)

    def challenge(self, nonce: bytes, h: bytes) -> SignedChallenge:
        return SignedChallenge(
            nonce=nonce, sig=self.sign_key.sign(challenge_message(self.site, h, nonce))
        )

    def result(self, h: bytes, result: Result) -> SignedResult:
        sig = self.sign_key.sign(
            result_message(self.site, h, result.granted, result.reason, result.event)
        )
        return SignedResult(
            granted=result.granted, reason=result.reason, event=result.event, sig=sig
        )


class PhoneExchange:
    """The phone's side, from what its credential carries: the site id and the site's
    two public keys (raw 32 bytes each); and the site's advertising key
    (:mod:`protocols.advert`: how a phone finds the hub over BLE; None: TCP only)."""

    def __init__(
        self, site: str, sign_key: bytes, exchange_key: bytes, advert_key: bytes | None = None
    ) -> None:
        self.site = site
        try:
            self.sign_key = Ed25519PublicKey.from_public_bytes(sign_key)
            self.exchange_key = X25519PublicKey.from_public_bytes(exchange_key)
        except ValueError:
            raise ValueError("a site key is 32 raw bytes") from None
        if advert_key is not None and len(advert_key) != ADVERT_KEY_LEN:
            raise ValueError(f"the advertising key is {ADVERT_KEY_LEN} raw bytes")
        self.advert_key = advert_key
        self._info = hello_info(site)

    def seal(self, hello: Hello) -> tuple[SealedHello, bytes]:
        body = encode_frame(hello)
        plain = len(body).to_bytes(2, "big") + body
        plain += bytes(-len(plain) % PAD)
        sealed = SUITE.encrypt(plain, self.exchange_key, info=self._info)
        return SealedHello(sealed=sealed), hello_hash(sealed)

    def check_challenge(self, frame: SignedChallenge, h: bytes) -> None:
        try:
            self.sign_key.verify(frame.sig, challenge_message(self.site, h, frame.nonce))
        except InvalidSignature:
            raise ImpostorError(
                "the challenge is not signed by this site's key for this hello: not the "
                "site's gateway (or the hello was replaced on the way); nothing was signed"
            ) from None

    def proof(self, key: Ed25519PrivateKey, hello: Hello, nonce: bytes, h: bytes) -> Proof:
        msg = proof_message_v2(
            nonce, self.site, hello.door, hello.action, token_hash=token_hash(hello), hello_hash=h
        )
        return Proof(sig=key.sign(msg))

    def check_result(self, frame: SignedResult, h: bytes) -> Result:
        try:
            self.sign_key.verify(
                frame.sig,
                result_message(self.site, h, frame.granted, frame.reason, frame.event),
            )
        except InvalidSignature:
            raise ImpostorError(
                "the result is not signed by this site's key for this hello: not the "
                "site's gateway (or the hello was replaced on the way)"
            ) from None
        return frame.result()
