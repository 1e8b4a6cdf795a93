"""COSE_Sign1 (RFC 9052) with EdDSA / Ed25519 only: the envelope of every signed lockgw message.

Credential tokens (CONTRACT §2), signed commands and revocation lists (§5) are all::

    [tag 61 (CWT, optional)] tag 18 [ protected: bstr .cbor {1: -8, ?4: kid},
                                       unprotected: {?4: kid},
                                       payload: bstr,
                                       signature: bstr(64) ]

Decoding is strict and bounded (:mod:`protocols.strict_cbor`): a size limit before
anything is parsed, a nesting limit, plain CBOR types only (no floats, no tags inside),
definite lengths, preferred (shortest) encodings and no duplicate map keys. The algorithm is only ever taken
from the protected header and must be EdDSA; the only other header understood is ``kid``
(a key-lookup hint: protected or unprotected, never both with different values). Every
defect raises the caller's :class:`~protocols.errors.ProtocolError` subclass with a
:class:`~protocols.errors.Reason` — never another exception, whatever the bytes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final, NamedTuple

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocols import strict_cbor
from protocols.errors import ProtocolError, Reason
from protocols.keys import kid_of

__all__ = [
    "ALG_EDDSA",
    "TAG_CWT",
    "TAG_SIGN1",
    "KeyRing",
    "Sign1",
    "decode_sign1",
    "sig_structure",
    "sign1",
    "strict_loads",
]

ALG_EDDSA: Final = -8
TAG_SIGN1: Final = 18
TAG_CWT: Final = 61
_HDR_ALG: Final = 1
_HDR_KID: Final = 4
_MAX_KID: Final = 64
_SIG1_PREFIX: Final = b"\x84\x6aSignature1"  # array(4), text(10) "Signature1"

ErrorType = type[ProtocolError]


def _bad(error: ErrorType, detail: str, reason: Reason = Reason.MALFORMED) -> ProtocolError:
    return error(reason, detail)


def strict_loads(data: bytes, error: ErrorType, *, what: str = "CBOR") -> Any:
    """Decode ``data`` as one plain, preferred-serialised CBOR item, or raise ``error``
    (:mod:`protocols.strict_cbor`: no floats or tags, no duplicate keys, definite lengths,
    shortest forms, no trailing bytes)."""
    try:
        return strict_cbor.loads(data)
    except strict_cbor.StrictCBORError as exc:
        raise _bad(error, f"{what}: {exc}") from None
    except RecursionError:  # pragma: no cover - MAX_DEPTH keeps recursion shallow
        raise _bad(error, f"{what}: nested too deeply") from None


def _bstr_head(n: int) -> bytes:
    if n < 24:
        return bytes((0x40 | n,))
    if n < 0x100:
        return bytes((0x58, n))
    if n < 0x10000:
        return b"\x59" + n.to_bytes(2, "big")
    return b"\x5a" + n.to_bytes(4, "big")


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    """``["Signature1", protected, h'', payload]`` in CBOR (RFC 9052 §4.4), what is signed."""
    return b"".join(
        (
            _SIG1_PREFIX,
            _bstr_head(len(protected)),
            protected,
            b"\x40",
            _bstr_head(len(payload)),
            payload,
        )
    )


def _protected_bytes(kid: bytes | None) -> bytes:
    hdr: dict[int, Any] = {_HDR_ALG: ALG_EDDSA}
    if kid is not None:
        hdr[_HDR_KID] = kid
    out: bytes = cbor2.dumps(hdr, canonical=True)
    return out


def sign1(
    key: Ed25519PrivateKey, payload: bytes, *, kid: bytes | None = None, tag_cwt: bool = False
) -> bytes:
    """A COSE_Sign1 over ``payload``; ``kid`` defaults to the key's CONTRACT §2 kid."""
    protected = _protected_bytes(kid_of(key) if kid is None else kid)
    sig = key.sign(sig_structure(protected, payload))
    msg = cbor2.CBORTag(TAG_SIGN1, [protected, {}, payload, sig])
    if tag_cwt:
        msg = cbor2.CBORTag(TAG_CWT, msg)
    out: bytes = cbor2.dumps(msg)
    return out


class Sign1(NamedTuple):
    """A decoded, not yet verified COSE_Sign1 (a NamedTuple: built on every decision)."""

    protected: bytes
    kid: bytes | None
    payload: bytes
    signature: bytes
    #: the Sig_structure (what was signed), when the decoder had it in hand; else built
    tbs: bytes = b""

    def verify(self, key: Ed25519PublicKey, error: ErrorType) -> None:
        try:
            key.verify(self.signature, self.tbs or sig_structure(self.protected, self.payload))
        except InvalidSignature:
            raise _bad(error, "signature does not verify", Reason.BAD_SIGNATURE) from None


#: protected header bytes seen before → kid (the header is tiny and repeats per issuer)
_PROTECTED_CACHE: dict[bytes, bytes | None] = {}


def _parse_protected(data: bytes, error: ErrorType) -> bytes | None:
    cached = _PROTECTED_CACHE.get(data, b"")
    if cached != b"":
        return cached
    if not data:
        raise _bad(error, "empty protected header: the algorithm must be in it")
    hdr = strict_loads(data, error, what="protected header")
    if type(hdr) is not dict:
        raise _bad(error, "protected header is not a map")
    extra = set(hdr) - {_HDR_ALG, _HDR_KID}
    if extra:
        raise _bad(
            error,
            f"protected header has labels lockgw does not understand: {sorted(map(str, extra))}",
        )
    alg = hdr.get(_HDR_ALG)
    if type(alg) is not int or alg != ALG_EDDSA:
        raise _bad(error, f"algorithm must be EdDSA (-8), not {alg!r}")
    kid = hdr.get(_HDR_KID)
    if kid is not None and (type(kid) is not bytes or not 0 < len(kid) <= _MAX_KID):
        raise _bad(error, "kid must be a byte string")
    if len(_PROTECTED_CACHE) < 256:
        _PROTECTED_CACHE[data] = kid
    return kid


def _fast_sign1(raw: bytes) -> Sign1 | None:
    """The common layout in one pass: [61(] 18([bstr(<24) protected, {}, bstr payload,
    bstr(64)]) with a protected header seen before. Anything else: None, and the generic
    strict path decides (a differential test pins that both agree). The Sig_structure is
    cut from the same bytes: its protected and payload byte strings, heads included, are
    the message's own (both in shortest form, which this path checks)."""
    try:
        pos = 2 if raw[:2] == b"\xd8\x3d" else 0
        if raw[pos : pos + 2] != b"\xd2\x84":
            return None
        plen = raw[pos + 2] - 0x40
        if not 0 < plen < 24:
            return None
        pstart = pos + 2
        pos += 3 + plen
        protected = raw[pstart + 1 : pos]
        kid = _PROTECTED_CACHE.get(protected, b"")
        if kid == b"" or raw[pos] != 0xA0:
            return None
        head = raw[pos + 1]
        if head == 0x58:
            size = raw[pos + 2]
            start = pos + 3
            if size < 24:
                return None
        elif head == 0x59:
            size = (raw[pos + 2] << 8) | raw[pos + 3]
            start = pos + 4
            if size < 0x100:
                return None
        else:
            return None
        end = start + size
        if raw[end : end + 2] != b"\x58\x40" or end + 66 != len(raw):
            return None
        tbs = b"".join((_SIG1_PREFIX, raw[pstart:pos], b"\x40", raw[pos + 1 : end]))
        return Sign1(protected, kid, raw[start:end], raw[end + 2 :], tbs)
    except IndexError:  # truncated: the generic path says so
        return None


def decode_sign1(raw: bytes, error: ErrorType, *, max_size: int) -> Sign1:
    """Strictly decode a (optionally CWT-tagged) COSE_Sign1 of at most ``max_size`` bytes."""
    if type(raw) is not bytes:
        raise _bad(error, "expected bytes")
    if len(raw) > max_size:
        raise _bad(error, f"{len(raw)} bytes, more than the limit of {max_size}")
    fast = _fast_sign1(raw)
    return fast if fast is not None else _generic_sign1(raw, error)


def _generic_sign1(raw: bytes, error: ErrorType) -> Sign1:
    pos = 2 if raw[:2] == b"\xd8\x3d" else 0  # tag 61 (CWT), optional
    if raw[pos : pos + 1] != b"\xd2":
        raise _bad(error, "not a COSE_Sign1 (CBOR tag 18)")
    try:
        arr = strict_cbor.loads(raw, pos + 1)
    except strict_cbor.StrictCBORError as exc:
        raise _bad(error, f"COSE_Sign1: {exc}") from None
    if type(arr) is not list or len(arr) != 4:
        raise _bad(error, "COSE_Sign1 must be an array of 4")
    protected, unprotected, payload, signature = arr
    if type(protected) is not bytes or type(payload) is not bytes or type(signature) is not bytes:
        raise _bad(error, "COSE_Sign1 protected, payload and signature must be byte strings")
    if len(signature) != 64:
        raise _bad(error, f"Ed25519 signature must be 64 bytes, not {len(signature)}")
    if type(unprotected) is not dict:
        raise _bad(error, "unprotected header must be a map")
    kid = _parse_protected(protected, error)
    if unprotected:
        if set(unprotected) - {_HDR_KID}:
            raise _bad(
                error, "unprotected header may only carry kid (alg only in the protected header)"
            )
        ukid = unprotected[_HDR_KID]
        if type(ukid) is not bytes or not 0 < len(ukid) <= _MAX_KID:
            raise _bad(error, "kid must be a byte string")
        if kid is not None and ukid != kid:
            raise _bad(error, "protected and unprotected kid differ")
        kid = ukid
    return Sign1(protected, kid, payload, signature, sig_structure(protected, payload))


class KeyRing(Mapping[str, Ed25519PublicKey]):
    """Owner id → Ed25519 public key, with the kid of each precomputed for lookup."""

    __slots__ = ("_by_id", "_by_kid", "_entries", "_kids")

    def __init__(self, keys: Mapping[str, Ed25519PublicKey] | None = None) -> None:
        self._by_id: dict[str, Ed25519PublicKey] = dict(keys or {})
        self._kids: dict[str, bytes] = {i: kid_of(k) for i, k in self._by_id.items()}
        self._by_kid: dict[bytes, str] = {kid: i for i, kid in self._kids.items()}
        self._entries = {i: (k, self._kids[i]) for i, k in self._by_id.items()}

    @classmethod
    def of(cls, keys: KeyRing | Mapping[str, Ed25519PublicKey]) -> KeyRing:
        return keys if isinstance(keys, KeyRing) else cls(keys)

    def __getitem__(self, owner: str) -> Ed25519PublicKey:
        return self._by_id[owner]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, owner: str, default: Any = None) -> Any:  # dict speed on the hot path
        return self._by_id.get(owner, default)

    def kid(self, owner: str) -> bytes | None:
        return self._kids.get(owner)

    def entry(self, owner: str) -> tuple[Ed25519PublicKey, bytes] | None:
        """(key, kid) of ``owner`` in one lookup (the decision's hot path)."""
        return self._entries.get(owner)

    def owner_of(self, kid: bytes) -> str | None:
        return self._by_kid.get(kid)
