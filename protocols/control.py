"""Signed control messages (CONTRACT §5): remote commands and revocation lists.

Both are COSE_Sign1 / EdDSA with the token's header rules (:mod:`protocols.cose`) and a
CBOR map as payload.

**Command**, signed by a configured command signer (found by ``kid``)::

    {"cmd": "unlock"|"unlatch"|"lock"|"open"|"refresh"|"alarm", "site": text,
     "door": text (not for alarm), "request_id": text, "exp": int (≤ 120 s ahead),
     "actor": text, ?"reason": text, ?"state": "raised"|"cleared" (alarm only)}

:meth:`Command.verify` checks signer, signature, site and lifetime; that a
``request_id`` is used once is the gateway's state (``gateway.access``).

**Revocation list**, signed by the issuer it speaks for::

    {"iss": text, "seq": int, "iat": int, "cti": [bstr(16)...], "sub": [text...]}

It replaces the issuer's previous list; a ``seq`` not above the held one is ignored.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocols.cose import KeyRing, Sign1, decode_sign1, sign1, strict_loads
from protocols.errors import ControlMessageError, Reason

__all__ = [
    "ALARM_STATES",
    "COMMANDS",
    "MAX_AHEAD",
    "MAX_COMMAND",
    "MAX_REVOCATION_LIST",
    "OPENING_COMMANDS",
    "Command",
    "RevocationList",
]

MAX_COMMAND: Final = 1024
MAX_REVOCATION_LIST: Final = 256 * 1024
#: a command's exp may be at most this far ahead of the gateway's clock
MAX_AHEAD: Final = 120
COMMANDS: Final = ("unlock", "unlatch", "lock", "open", "refresh", "alarm")
OPENING_COMMANDS: Final = frozenset({"unlock", "unlatch", "open"})
ALARM_STATES: Final = ("raised", "cleared")
_MAX_TEXT: Final = 128
_MAX_ENTRIES: Final = 10_000
_MAX_INT: Final = 2**53


def _err(detail: str, reason: Reason = Reason.MALFORMED) -> ControlMessageError:
    return ControlMessageError(reason, detail)


def _text(m: dict[Any, Any], key: str, *, required: bool = True) -> str | None:
    v = m.get(key)
    if v is None and key not in m and not required:
        return None
    if type(v) is not str or not 0 < len(v) <= _MAX_TEXT:
        raise _err(f"{key!r} must be text of 1..{_MAX_TEXT} characters")
    return v


def _int(m: dict[Any, Any], key: str) -> int:
    v = m.get(key)
    if type(v) is not int or not 0 <= v < _MAX_INT:
        raise _err(f"{key!r} must be a non-negative integer")
    return v


def _map(msg: Sign1, allowed: set[str], what: str) -> dict[str, Any]:
    m = strict_loads(msg.payload, ControlMessageError, what=what)
    if type(m) is not dict:
        raise _err(f"a {what} is a CBOR map")
    extra = set(m) - allowed
    if extra:
        raise _err(f"{what} has unknown keys {sorted(map(repr, extra))}")
    return m


@dataclass(frozen=True, slots=True)
class Command:
    cmd: str
    site: str
    request_id: str
    exp: int
    actor: str
    door: str | None = None
    reason: str | None = None
    state: str | None = None
    #: set by :meth:`verify`: the id of the signer whose key verified it
    signer: str | None = field(default=None, compare=False)
    kid: bytes | None = field(default=None, compare=False)

    @classmethod
    def new(
        cls,
        cmd: str,
        *,
        site: str,
        actor: str,
        door: str | None = None,
        reason: str | None = None,
        state: str | None = None,
        valid_for: int = 60,
        request_id: str | None = None,
        now: float | None = None,
    ) -> Command:
        """A fresh command expiring ``valid_for`` seconds from now (a UUID request id)."""
        t = time.time() if now is None else now
        c = cls(
            cmd=cmd,
            site=site,
            request_id=request_id or str(uuid.uuid4()),
            exp=int(t) + valid_for,
            actor=actor,
            door=door,
            reason=reason,
            state=state,
        )
        c._check()
        return c

    def _check(self) -> None:
        if self.cmd not in COMMANDS:
            raise _err(f"cmd must be one of {', '.join(COMMANDS)}")
        if self.cmd == "alarm":
            if self.state not in ALARM_STATES:
                raise _err("an alarm command carries state 'raised' or 'cleared'")
        else:
            if self.state is not None:
                raise _err("only an alarm command carries a state")
            if self.door is None:
                raise _err(f"a {self.cmd} command names a door")

    def encode(self) -> bytes:
        """The canonical CBOR payload."""
        m: dict[str, Any] = {
            "cmd": self.cmd,
            "site": self.site,
            "request_id": self.request_id,
            "exp": self.exp,
            "actor": self.actor,
        }
        for k in ("door", "reason", "state"):
            if (v := getattr(self, k)) is not None:
                m[k] = v
        out: bytes = cbor2.dumps(m, canonical=True)
        return out

    def sign(self, key: Ed25519PrivateKey) -> bytes:
        self._check()
        raw = sign1(key, self.encode())
        if len(raw) > MAX_COMMAND:
            raise _err(f"command of {len(raw)} bytes exceeds {MAX_COMMAND}")
        return raw

    @classmethod
    def _from(cls, msg: Sign1) -> Command:
        m = _map(
            msg,
            {"cmd", "site", "door", "request_id", "exp", "actor", "reason", "state"},
            "command",
        )
        c = cls(
            cmd=_text(m, "cmd") or "",
            site=_text(m, "site") or "",
            request_id=_text(m, "request_id") or "",
            exp=_int(m, "exp"),
            actor=_text(m, "actor") or "",
            door=_text(m, "door", required=False),
            reason=_text(m, "reason", required=False),
            state=_text(m, "state", required=False),
            kid=msg.kid,
        )
        c._check()
        return c

    @classmethod
    def decode(cls, raw: bytes) -> Command:
        """Strictly decode, **without** verifying (for inspection and error reports)."""
        return cls._from(decode_sign1(raw, ControlMessageError, max_size=MAX_COMMAND))

    @classmethod
    def verify(
        cls,
        raw: bytes,
        signers: KeyRing | Mapping[str, Ed25519PublicKey],
        *,
        site: str,
        now: float,
        skew: int = 0,
    ) -> Command:
        """Decode and verify: a known signer's kid and signature, this site, not expired,
        ``exp`` at most :data:`MAX_AHEAD` (+ skew) seconds ahead. Raises ControlMessageError:
        ``malformed``, ``unknown_issuer``, ``bad_signature``, ``wrong_site``, ``expired``."""
        msg = decode_sign1(raw, ControlMessageError, max_size=MAX_COMMAND)
        c = cls._from(msg)
        ring = KeyRing.of(signers)
        if msg.kid is None:
            raise _err("a command must carry the signer's kid", Reason.UNKNOWN_ISSUER)
        signer = ring.owner_of(msg.kid)
        if signer is None:
            raise _err(
                f"kid {msg.kid.hex()} is no configured command signer", Reason.UNKNOWN_ISSUER
            )
        msg.verify(ring[signer], ControlMessageError)
        c = replace(c, signer=signer)
        if c.site != site:
            raise _err(f"command for site {c.site!r}, this is {site!r}", Reason.WRONG_SITE)
        if c.exp < now - skew:
            raise _err(f"command expired {now - c.exp:.0f} s ago", Reason.EXPIRED)
        if c.exp > now + MAX_AHEAD + skew:
            raise _err(f"command exp is {c.exp - now:.0f} s ahead; at most {MAX_AHEAD} s allowed")
        return c


@dataclass(frozen=True, slots=True)
class RevocationList:
    iss: str
    seq: int
    iat: int
    cti: frozenset[bytes] = frozenset()
    sub: frozenset[str] = frozenset()

    @classmethod
    def new(
        cls,
        iss: str,
        seq: int,
        *,
        cti: Iterable[bytes] = (),
        sub: Iterable[str] = (),
        iat: int | None = None,
    ) -> RevocationList:
        return cls(
            iss=iss,
            seq=seq,
            iat=int(time.time()) if iat is None else iat,
            cti=frozenset(cti),
            sub=frozenset(sub),
        )

    def encode(self) -> bytes:
        m = {
            "iss": self.iss,
            "seq": self.seq,
            "iat": self.iat,
            "cti": sorted(self.cti),
            "sub": sorted(self.sub),
        }
        out: bytes = cbor2.dumps(m, canonical=True)
        return out

    def sign(self, key: Ed25519PrivateKey) -> bytes:
        raw = sign1(key, self.encode())
        RevocationList.decode(raw)  # never hand out what a gateway refuses
        return raw

    @classmethod
    def _from(cls, msg: Sign1) -> RevocationList:
        m = _map(msg, {"iss", "seq", "iat", "cti", "sub"}, "revocation list")
        ctis, subs = m.get("cti", []), m.get("sub", [])
        if type(ctis) is not list or type(subs) is not list:
            raise _err("cti and sub must be arrays")
        if len(ctis) + len(subs) > _MAX_ENTRIES:
            raise _err(f"more than {_MAX_ENTRIES} entries")
        for c in ctis:
            if type(c) is not bytes or len(c) != 16:
                raise _err("every cti is 16 bytes")
        for s in subs:
            if type(s) is not str or not 0 < len(s) <= _MAX_TEXT:
                raise _err(f"every sub is text of 1..{_MAX_TEXT} characters")
        return cls(
            iss=_text(m, "iss") or "",
            seq=_int(m, "seq"),
            iat=_int(m, "iat"),
            cti=frozenset(ctis),
            sub=frozenset(subs),
        )

    @classmethod
    def decode(cls, raw: bytes) -> RevocationList:
        """Strictly decode, **without** verifying."""
        return cls._from(decode_sign1(raw, ControlMessageError, max_size=MAX_REVOCATION_LIST))

    @classmethod
    def verify(
        cls, raw: bytes, issuers: KeyRing | Mapping[str, Ed25519PublicKey]
    ) -> RevocationList:
        """Decode and verify with the key of the issuer the list names.
        Raises ControlMessageError ``malformed``, ``unknown_issuer`` or ``bad_signature``."""
        msg = decode_sign1(raw, ControlMessageError, max_size=MAX_REVOCATION_LIST)
        rl = cls._from(msg)
        ring = KeyRing.of(issuers)
        key = ring.get(rl.iss)
        if key is None:
            raise _err(f"no key for issuer {rl.iss!r}", Reason.UNKNOWN_ISSUER)
        if msg.kid is not None and msg.kid != ring.kid(rl.iss):
            raise _err(f"kid {msg.kid.hex()} is not issuer {rl.iss!r}'s key", Reason.BAD_SIGNATURE)
        msg.verify(key, ControlMessageError)
        return rl
