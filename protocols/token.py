"""The credential token (CONTRACT §2): a CWT in a COSE_Sign1, EdDSA, bound to one phone.

:func:`issue_token` signs one; :func:`decode_token` reads one without verifying it (for
``lockgw token inspect``); :func:`verify_token` decodes, finds the issuer's key by ``iss``
(the ``kid``, if present, must be that key's) and checks the signature. Policy — site,
door, window, role, purpose, revocation, time — is the gateway's (``gateway.access``).

Claims (integer keys are RFC 8392's): 1 iss, 2 sub, 3 aud, 4 exp, 5 nbf, 6 iat, 7 cti
(16 bytes), 8 cnf ``{1: {1: 1, -1: 6, -2: x}}``, ``"doors"``, ``"role"``, ``"purpose"``,
``"win"``. Required: iss, sub, aud, exp, cti, cnf, doors, role, purpose. Unknown claims are
ignored (RFC 8392 §3) but must be plain CBOR. Over 1024 bytes, another algorithm, no
``cnf``, or a claim of the wrong type: :class:`~protocols.errors.TokenError` ``malformed``.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final, NamedTuple

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocols.cose import KeyRing, Sign1, decode_sign1, sign1, strict_loads
from protocols.errors import Reason, TokenError
from protocols.keys import kid_of, raw_public
from protocols.windows import Window

__all__ = [
    "MAX_TOKEN",
    "PURPOSES",
    "TokenClaims",
    "b64decode",
    "b64encode",
    "decode_token",
    "issue_token",
    "verify_token",
]

MAX_TOKEN: Final = 1024
PURPOSES: Final = ("planned", "emergency")
_MAX_ID: Final = 128
_MAX_DOORS: Final = 32
_MAX_WINDOWS: Final = 32
_MAX_TIME: Final = 2**53  # seconds; a bound so arithmetic never surprises

_ISS, _SUB, _AUD, _EXP, _NBF, _IAT, _CTI, _CNF = 1, 2, 3, 4, 5, 6, 7, 8
_COSE_KEY: Final = 1
_KTY, _KTY_OKP, _CRV, _CRV_ED25519, _X = 1, 1, -1, 6, -2


def b64encode(data: bytes) -> str:
    """base64url without padding (the text form of every token and control message)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64decode(text: str) -> bytes:
    """Inverse of :func:`b64encode`; accepts padding and surrounding white space."""
    s = "".join(text.split())
    try:
        return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not base64url: {exc}") from None


class TokenClaims(NamedTuple):
    """A token's claims. Immutable; a NamedTuple because one is built per decision and
    that is measurably cheaper than a frozen dataclass on the gateway's hot path."""

    iss: str
    sub: str
    aud: str
    exp: int
    cti: bytes
    holder_key: bytes  # the phone's raw 32-byte Ed25519 public key (cnf)
    doors: tuple[str, ...]
    role: str
    purposes: tuple[str, ...]
    windows: tuple[Window, ...] = ()
    nbf: int | None = None
    iat: int | None = None
    kid: bytes | None = None

    @property
    def token_id(self) -> str:
        return self.cti.hex()

    def to_json(self) -> dict[str, Any]:
        """For people and logs: every claim, bytes as hex / base64url."""
        from protocols.windows import format_window

        return {
            "iss": self.iss,
            "sub": self.sub,
            "aud": self.aud,
            "exp": self.exp,
            "nbf": self.nbf,
            "iat": self.iat,
            "cti": self.cti.hex(),
            "holder_key": b64encode(self.holder_key),
            "doors": list(self.doors),
            "role": self.role,
            "purposes": list(self.purposes),
            "windows": [format_window(w) for w in self.windows],
            "kid": self.kid.hex() if self.kid is not None else None,
        }


def _raw(key: Ed25519PublicKey | bytes) -> bytes:
    if isinstance(key, bytes):
        if len(key) != 32:
            raise ValueError("a raw Ed25519 public key is 32 bytes")
        return key
    return raw_public(key)


def issue_token(
    key: Ed25519PrivateKey,
    *,
    iss: str,
    sub: str,
    aud: str,
    holder_key: Ed25519PublicKey | bytes,
    doors: Iterable[str],
    role: str,
    purposes: Iterable[str],
    exp: int,
    nbf: int | None = None,
    iat: int | None = None,
    windows: Iterable[Window] = (),
    cti: bytes | None = None,
    tag_cwt: bool = True,
) -> bytes:
    """Sign a token. ``iat`` defaults to now, ``cti`` to 16 random bytes.

    The result is checked by decoding it again, so whatever this returns the gateway
    can read; a bad argument raises :class:`~protocols.errors.TokenError` (malformed).
    """
    claims: dict[Any, Any] = {
        _ISS: iss,
        _SUB: sub,
        _AUD: aud,
        _EXP: int(exp),
        _IAT: int(time.time()) if iat is None else int(iat),
        _CTI: os.urandom(16) if cti is None else cti,
        _CNF: {_COSE_KEY: {_KTY: _KTY_OKP, _CRV: _CRV_ED25519, _X: _raw(holder_key)}},
        "doors": list(doors),
        "role": role,
        "purpose": list(purposes),
    }
    if nbf is not None:
        claims[_NBF] = int(nbf)
    wins = [w.to_cbor() for w in windows]
    if wins:
        claims["win"] = wins
    raw = sign1(key, cbor2.dumps(claims, canonical=True), kid=kid_of(key), tag_cwt=tag_cwt)
    decode_token(raw)  # refuse to hand out what a gateway would refuse
    return raw


def _time(claims: dict[Any, Any], key: int, name: str) -> int | None:
    v = claims.get(key)
    if v is None and key not in claims:
        return None
    if type(v) is not int or not 0 <= v < _MAX_TIME:
        raise TokenError(Reason.MALFORMED, f"claim {name} must be an integer number of seconds")
    return v


def _texts(v: Any, name: str, limit: int) -> tuple[str, ...]:
    if type(v) is not list or not 0 < len(v) <= limit:
        raise TokenError(Reason.MALFORMED, f"claim {name} must be an array of 1..{limit} texts")
    for s in v:
        if type(s) is not str or not 0 < len(s) <= _MAX_ID:
            raise TokenError(
                Reason.MALFORMED, f"claim {name} must hold texts of 1..{_MAX_ID} characters"
            )
    if len(set(v)) != len(v):
        raise TokenError(Reason.MALFORMED, f"claim {name} repeats an entry")
    return tuple(v)


def _holder_key(cnf: Any) -> bytes:
    if type(cnf) is not dict or len(cnf) != 1 or type(ck := cnf.get(_COSE_KEY)) is not dict:
        raise TokenError(Reason.MALFORMED, "cnf must be {1: COSE_Key} (RFC 8747)")
    if ck.get(_KTY) != _KTY_OKP or ck.get(_CRV) != _CRV_ED25519 or type(ck.get(_KTY)) is not int:
        raise TokenError(Reason.MALFORMED, "cnf key must be an Ed25519 OKP key {1: 1, -1: 6}")
    x = ck.get(_X)
    if type(x) is not bytes or len(x) != 32:
        raise TokenError(Reason.MALFORMED, "cnf key x must be 32 bytes")
    if len(ck) > 3 and set(ck) - {_KTY, _CRV, _X, 2, 3}:  # kid (2), alg (3) tolerated, no d
        raise TokenError(Reason.MALFORMED, "cnf key carries unexpected parameters (a private key?)")
    return x


def _bad(detail: str) -> TokenError:
    return TokenError(Reason.MALFORMED, detail)


def _claims(msg: Sign1) -> TokenClaims:
    claims = strict_loads(msg.payload, TokenError, what="token claims")
    if type(claims) is not dict:
        raise _bad("token claims must be a CBOR map")
    get: Any = claims.get
    iss, sub, aud, role = get(_ISS), get(_SUB), get(_AUD), get("role")
    for name, v in (("iss", iss), ("sub", sub), ("aud", aud), ("role", role)):
        if type(v) is not str or not 0 < len(v) <= _MAX_ID:
            raise _bad(f"claim {name} must be text of 1..{_MAX_ID} characters")
    exp = _time(claims, _EXP, "exp")
    if exp is None:
        raise _bad("claim exp is required")
    cti = get(_CTI)
    if type(cti) is not bytes or len(cti) != 16:
        raise _bad("claim cti must be 16 bytes")
    cnf = get(_CNF)
    if cnf is None:
        raise _bad("claim cnf is required (the phone's key)")
    purposes = _texts(get("purpose"), "purpose", 2)
    for p in purposes:
        if p != "planned" and p != "emergency":  # noqa: PLR1714 - hot path
            raise _bad(f"purpose {p!r} is not planned or emergency")
    windows: tuple[Window, ...] = ()
    win = get("win")
    if win is not None or "win" in claims:
        if type(win) is not list or not 0 < len(win) <= _MAX_WINDOWS:
            raise _bad(f"claim win must be an array of 1..{_MAX_WINDOWS} windows")
        try:
            windows = tuple([Window.from_cbor(w) for w in win])
        except ValueError as exc:
            raise _bad(f"claim win: {exc}") from None
    return TokenClaims(
        iss,
        sub,
        aud,
        exp,
        cti,
        _holder_key(cnf),
        _texts(get("doors"), "doors", _MAX_DOORS),
        role,
        purposes,
        windows,
        _time(claims, _NBF, "nbf") if _NBF in claims else None,
        _time(claims, _IAT, "iat") if _IAT in claims else None,
        msg.kid,
    )


def decode_token(raw: bytes) -> TokenClaims:
    """Decode strictly, **without** verifying the signature (for inspection only)."""
    return _claims(decode_sign1(raw, TokenError, max_size=MAX_TOKEN))


def verify_token(raw: bytes, keys: KeyRing | Mapping[str, Ed25519PublicKey]) -> TokenClaims:
    """Decode and verify against the key of the issuer the token names.

    ``keys`` maps issuer id → public key (a :class:`~protocols.cose.KeyRing` is reused
    as is; pass one to avoid recomputing kids). Raises TokenError: ``malformed``,
    ``unknown_issuer`` (no key for ``iss``) or ``bad_signature`` (wrong key or kid).
    """
    msg = decode_sign1(raw, TokenError, max_size=MAX_TOKEN)
    claims = _claims(msg)
    ring = KeyRing.of(keys)
    key = ring.get(claims.iss)
    if key is None:
        raise TokenError(Reason.UNKNOWN_ISSUER, f"no key for issuer {claims.iss!r}")
    if msg.kid is not None and msg.kid != ring.kid(claims.iss):
        raise TokenError(
            Reason.BAD_SIGNATURE, f"kid {msg.kid.hex()} is not issuer {claims.iss!r}'s key"
        )
    msg.verify(key, TokenError)
    return claims
