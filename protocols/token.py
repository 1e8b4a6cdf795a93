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
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocols.cose import KeyRing, Sign1, decode_sign1, sig_structure, sign1, strict_loads
from protocols.errors import ProtocolError, Reason, TokenError
from protocols.keys import kid_of, raw_public
from protocols.proof import phone_key, proof_message, proof_message_v2
from protocols.windows import Window

__all__ = [
    "MAX_TOKEN",
    "PURPOSES",
    "ProofError",
    "TokenClaims",
    "b64decode",
    "b64encode",
    "decode_token",
    "issue_token",
    "verify_presentation",
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


# -- the fast path ------------------------------------------------------------------------
# Tokens as issue_token writes them (canonical CBOR, the contract's claims only) are read
# in one pass over the bytes, without building the generic map first. Anything else —
# another key order inside cnf, unknown claims, long forms, a defect — returns None and
# goes through the generic strict path, which decides and explains. A differential test
# (tests/test_credential_fuzz.py) pins: whenever this returns claims, the generic path
# returns the same claims.
_CNF_HEAD: Final = b"\xa1\x01\xa3\x01\x01\x20\x06\x21\x58\x20"
_K_WIN, _K_ROLE, _K_DOORS, _K_PURPOSE = b"cwin", b"drole", b"edoors", b"gpurpose"
_PURPOSE_TEXT: Final = {b"gplanned": "planned", b"iemergency": "emergency"}


#: encoded size of an unsigned integer by its head byte (1000: not a short uint, and the
#: fast path gives up), and windows already seen by their exact bytes
_UINT_SIZE: Final = tuple(
    1 if h < 0x18 else 2 if h == 0x18 else 3 if h == 0x19 else 1000 for h in range(256)
)
_WINDOW_BYTES: dict[bytes, Window] = {}


def _fast_text(p: bytes, pos: int) -> tuple[str, int]:
    ib = p[pos]
    if 0x61 <= ib <= 0x77:
        end = pos + 1 + ib - 0x60
        return p[pos + 1 : end].decode("utf-8"), end
    if ib == 0x78 and 24 <= p[pos + 1] <= _MAX_ID:
        end = pos + 2 + p[pos + 1]
        return p[pos + 2 : end].decode("utf-8"), end
    raise ValueError


def _fast_uint(p: bytes, pos: int) -> tuple[int, int]:
    ib = p[pos]
    if ib < 0x18:
        return ib, pos + 1
    if ib == 0x18 and p[pos + 1] >= 24:
        return p[pos + 1], pos + 2
    if ib == 0x19:
        v = (p[pos + 1] << 8) | p[pos + 2]
        if v >= 0x100:
            return v, pos + 3
    if ib == 0x1A:
        v = int.from_bytes(p[pos + 1 : pos + 5], "big")
        if v >= 0x10000 and pos + 5 <= len(p):
            return v, pos + 5
    raise ValueError


def _fast_claims(p: bytes, kid: bytes | None) -> TokenClaims | None:
    try:
        return _line_claims(p, kid)
    except (IndexError, KeyError, ValueError, UnicodeDecodeError):
        return None


def _line_claims(p: bytes, kid: bytes | None) -> TokenClaims | None:
    """Straight down the layout issue_token writes: canonical key order 1 2 3 4 [5] [6] 7 8
    [win] role doors purpose. Any deviation returns None (the generic path decides)."""
    if p[1] != 1:
        return None
    # iss, sub, aud: the short-text case is written out three times on purpose — a helper
    # call per claim costs more than the parse itself here (bench/token_verify.py)
    h = p[2]  # iss
    if 0x61 <= h <= 0x77:
        pos = h - 0x5D
        iss = p[3:pos].decode("utf-8")
    else:
        iss, pos = _fast_text(p, 2)
    if p[pos] != 2:
        return None
    h = p[pos + 1]  # sub
    if 0x61 <= h <= 0x77:
        e = pos + h - 0x5E
        sub = p[pos + 2 : e].decode("utf-8")
        pos = e
    else:
        sub, pos = _fast_text(p, pos + 1)
    if p[pos] != 3:
        return None
    h = p[pos + 1]  # aud
    if 0x61 <= h <= 0x77:
        e = pos + h - 0x5E
        aud = p[pos + 2 : e].decode("utf-8")
        pos = e
    else:
        aud, pos = _fast_text(p, pos + 1)
    if p[pos] != 4:
        return None
    if p[pos + 1] == 0x1A:  # seconds since 1970: 4 bytes
        exp = int.from_bytes(p[pos + 2 : pos + 6], "big")
        if exp < 0x10000:
            return None
        pos += 6
    else:
        exp, pos = _fast_uint(p, pos + 1)
    entries = 9  # iss sub aud exp cti cnf role doors purpose; nbf, iat and win add one each
    nbf = iat = None
    if p[pos] == 5:
        nbf, pos = _fast_uint(p, pos + 1)
        entries += 1
    if p[pos] == 6:
        if p[pos + 1] == 0x1A:  # issue_token's iat: seconds since 1970, 4 bytes
            iat = int.from_bytes(p[pos + 2 : pos + 6], "big")
            if iat < 0x10000:
                return None
            pos += 6
        else:
            iat, pos = _fast_uint(p, pos + 1)
        entries += 1
    if p[pos] != 7 or p[pos + 1] != 0x50 or p[pos + 18] != 8:
        return None
    cti = p[pos + 2 : pos + 18]
    if p[pos + 19 : pos + 29] != _CNF_HEAD:
        return None
    holder = p[pos + 29 : pos + 61]
    pos += 61
    windows: tuple[Window, ...] = ()
    if p[pos] == 0x63:
        if p[pos : pos + 4] != _K_WIN:
            return None
        count = p[pos + 4] - 0x80
        if not 0 < count <= 23:
            return None
        pos += 5
        wins = []
        for _ in range(count):
            if p[pos] != 0x83:
                return None
            e = pos + 1
            e += _UINT_SIZE[p[e]]
            e += _UINT_SIZE[p[e]]
            e += _UINT_SIZE[p[e]]
            raw_w = p[pos:e]
            w = _WINDOW_BYTES.get(raw_w)
            if w is None:
                days, q = _fast_uint(p, pos + 1)
                start, q = _fast_uint(p, q)
                end, q = _fast_uint(p, q)
                if q != e:
                    return None
                w = Window.from_cbor([days, start, end])
                if len(_WINDOW_BYTES) < 4096:
                    _WINDOW_BYTES[raw_w] = w
            wins.append(w)
            pos = e
        windows = tuple(wins)
        entries += 1
    if p[pos : pos + 5] != _K_ROLE:
        return None
    h = p[pos + 5]
    if 0x61 <= h <= 0x77:
        e = pos + h - 0x5A
        role = p[pos + 6 : e].decode("utf-8")
        pos = e
    else:
        role, pos = _fast_text(p, pos + 5)
    if p[pos : pos + 6] != _K_DOORS:
        return None
    count = p[pos + 6] - 0x80
    if not 0 < count <= 23:
        return None
    pos += 7
    if count == 1:
        h = p[pos]
        if 0x61 <= h <= 0x77:
            e = pos + h - 0x5F
            doors: tuple[str, ...] = (p[pos + 1 : e].decode("utf-8"),)
            pos = e
        else:
            d, pos = _fast_text(p, pos)
            doors = (d,)
    else:
        items = []
        for _ in range(count):
            d, pos = _fast_text(p, pos)
            items.append(d)
        doors = tuple(items)
        if len(set(doors)) != count:
            return None
    if p[pos : pos + 8] != _K_PURPOSE:
        return None
    count = p[pos + 8] - 0x80
    pos += 9
    a = _PURPOSE_TEXT[p[pos : pos + p[pos] - 0x5F]]
    pos += p[pos] - 0x5F
    if count == 1:
        purposes: tuple[str, ...] = (a,)
    elif count == 2:
        b = _PURPOSE_TEXT[p[pos : pos + p[pos] - 0x5F]]
        pos += p[pos] - 0x5F
        if a == b:
            return None
        purposes = (a, b)
    else:
        return None
    if pos != len(p) or p[0] - 0xA0 != entries:
        return None
    if len(cti) != 16 or len(holder) != 32 or exp >= _MAX_TIME:
        return None
    if (nbf is not None and nbf >= _MAX_TIME) or (iat is not None and iat >= _MAX_TIME):
        return None
    return TokenClaims(
        iss, sub, aud, exp, cti, holder, doors, role, purposes, windows, nbf, iat, kid
    )


def _bad(detail: str) -> TokenError:
    return TokenError(Reason.MALFORMED, detail)


def _claims(msg: Sign1) -> TokenClaims:
    fast = _fast_claims(msg.payload, msg.kid)
    return fast if fast is not None else _generic_claims(msg)


def _generic_claims(msg: Sign1) -> TokenClaims:
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


class ProofError(ProtocolError):
    """``bad_proof``: the token is good (its claims are here, for the journal) but the
    proof of possession is not its phone's."""

    def __init__(self, claims: TokenClaims, detail: str) -> None:
        super().__init__(Reason.BAD_PROOF, detail)
        self.claims = claims


def verify_presentation(
    raw: bytes,
    keys: KeyRing,
    proof: bytes,
    *,
    nonce: bytes,
    site: str,
    door: str,
    action: str,
    binding: tuple[bytes, bytes] | None = None,
) -> TokenClaims:
    """A token presented at a door with its proof of possession (CONTRACT §3): what
    :func:`verify_token` and then :func:`~protocols.proof.verify_proof` check, in that
    order and with the same errors, in one pass. It is the gateway's hot path
    (``bench/token_verify.py``): one call instead of two, and both signature checks run
    back to back after all the parsing, which measurably costs less than Python work
    between them.

    ``binding`` = (token hash, hello hash) of a ``lockgw-unlock-v2`` exchange: the proof
    is then checked over :func:`~protocols.proof.proof_message_v2`; None = v1.

    Raises TokenError (``malformed``, ``unknown_issuer``, ``bad_signature``) or
    :class:`ProofError` (``bad_proof``, with the verified token's claims).
    """
    msg = decode_sign1(raw, TokenError, max_size=MAX_TOKEN)
    try:  # _claims(msg), inline
        claims = _line_claims(msg.payload, msg.kid)
    except (IndexError, KeyError, ValueError, UnicodeDecodeError):
        claims = None
    if claims is None:
        claims = _generic_claims(msg)
    entry = keys.entry(claims.iss)
    if entry is None:
        raise TokenError(Reason.UNKNOWN_ISSUER, f"no key for issuer {claims.iss!r}")
    key, kid = entry
    if msg.kid is not None and msg.kid != kid:
        raise TokenError(
            Reason.BAD_SIGNATURE, f"kid {msg.kid.hex()} is not issuer {claims.iss!r}'s key"
        )
    signed = (
        proof_message(nonce, site, door, action)
        if binding is None
        else proof_message_v2(
            nonce, site, door, action, token_hash=binding[0], hello_hash=binding[1]
        )
    )
    try:  # msg.verify(key, TokenError), inline
        key.verify(msg.signature, msg.tbs or sig_structure(msg.protected, msg.payload))
    except InvalidSignature:
        raise TokenError(Reason.BAD_SIGNATURE, "signature does not verify") from None
    if type(proof) is not bytes or len(proof) != 64:
        raise ProofError(claims, "a proof is a 64-byte Ed25519 signature")
    try:
        phone_key(claims.holder_key).verify(proof, signed)
    except (InvalidSignature, ValueError):
        raise ProofError(claims, "the proof is not signed by the token's phone key") from None
    return claims
