"""Signed control messages (CONTRACT §5): remote commands, revocation lists and rosters.

All are COSE_Sign1 / EdDSA with the token's header rules (:mod:`protocols.cose`) and a
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

**Roster** (an addition to CONTRACT §5), signed by the issuer it speaks for: who that
issuer has authorised at one site, with the name the organisation shows the resident::

    {"iss": text, "site": text, "seq": int, "iat": int,
     "entries": [{"sub": text, ?"cti": bstr(16), "name": text, "role": text,
                  "purpose": [text...], "doors": [text...], ?"win": [[days, start, end]...],
                  ?"nbf": int, ?"exp": int}...]}

It replaces the issuer's previous roster for that site, with the same rollback rule. An
entry with a ``cti`` lists that one token; an entry without lists every token of its ``sub``.
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
from protocols.windows import Window

__all__ = [
    "ALARM_STATES",
    "COMMANDS",
    "MAX_AHEAD",
    "MAX_COMMAND",
    "MAX_REVOCATION_LIST",
    "MAX_ROSTER",
    "MAX_ROSTER_ENTRIES",
    "OPENING_COMMANDS",
    "Command",
    "RevocationList",
    "Roster",
    "RosterEntry",
]

MAX_COMMAND: Final = 1024
MAX_REVOCATION_LIST: Final = 256 * 1024
MAX_ROSTER: Final = 256 * 1024
MAX_ROSTER_ENTRIES: Final = 1000
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


_ENTRY_KEYS: Final = {"sub", "cti", "name", "role", "purpose", "doors", "win", "nbf", "exp"}
_PURPOSES: Final = ("planned", "emergency")
_MAX_NAME: Final = 64


def _texts(v: Any, what: str, limit: int, *, allowed: tuple[str, ...] = ()) -> tuple[str, ...]:
    if type(v) is not list or not 0 < len(v) <= limit:
        raise _err(f"{what} must be an array of 1..{limit} texts")
    for t in v:
        if type(t) is not str or not 0 < len(t) <= _MAX_TEXT or (allowed and t not in allowed):
            raise _err(f"{what}: {t!r} is not " + ("one of " + ", ".join(allowed) if allowed else "text"))
    if len(set(v)) != len(v):
        raise _err(f"{what} repeats a value")
    return tuple(v)


@dataclass(frozen=True, slots=True)
class RosterEntry:
    """One authorised person (or one token) on an issuer's roster for a site."""

    sub: str
    name: str
    role: str
    purposes: tuple[str, ...]
    doors: tuple[str, ...]
    cti: bytes | None = None
    windows: tuple[Window, ...] = ()
    nbf: int | None = None
    exp: int | None = None

    def to_cbor(self) -> dict[str, Any]:
        m: dict[str, Any] = {
            "sub": self.sub,
            "name": self.name,
            "role": self.role,
            "purpose": list(self.purposes),
            "doors": list(self.doors),
        }
        if self.cti is not None:
            m["cti"] = self.cti
        if self.windows:
            m["win"] = [w.to_cbor() for w in self.windows]
        if self.nbf is not None:
            m["nbf"] = self.nbf
        if self.exp is not None:
            m["exp"] = self.exp
        return m

    def to_json(self) -> dict[str, Any]:
        """The entry as JSON (the CLI's roster files, the journal): cti as hex."""
        m = self.to_cbor()
        if self.cti is not None:
            m["cti"] = self.cti.hex()
        return m

    @classmethod
    def from_json(cls, m: Any) -> RosterEntry:
        """From :meth:`to_json`'s shape (cti as hex); ControlMessageError when wrong."""
        if not isinstance(m, dict):
            raise _err("a roster entry is an object")
        m = dict(m)
        if isinstance(m.get("cti"), str):
            try:
                m["cti"] = bytes.fromhex(m["cti"])
            except ValueError:
                raise _err("cti must be 32 hex digits") from None
        return cls.from_cbor(m)

    @classmethod
    def from_cbor(cls, m: Any) -> RosterEntry:
        if type(m) is not dict:
            raise _err("a roster entry is a map")
        extra = set(m) - _ENTRY_KEYS
        if extra:
            raise _err(f"roster entry has unknown keys {sorted(map(repr, extra))}")
        name = m.get("name")
        if type(name) is not str or not 0 < len(name) <= _MAX_NAME:
            raise _err(f"an entry's name must be text of 1..{_MAX_NAME} characters")
        cti = m.get("cti")
        if cti is not None and (type(cti) is not bytes or len(cti) != 16):
            raise _err("an entry's cti is 16 bytes")
        win = m.get("win", [])
        if type(win) is not list or len(win) > 32:
            raise _err("win must be an array of at most 32 windows")
        try:
            windows = tuple(Window.from_cbor(w) for w in win)
        except ValueError as exc:
            raise _err(str(exc)) from None
        nbf = _int(m, "nbf") if "nbf" in m else None
        exp = _int(m, "exp") if "exp" in m else None
        return cls(
            sub=_text(m, "sub") or "",
            name=name,
            role=_text(m, "role") or "",
            purposes=_texts(m.get("purpose"), "purpose", 2, allowed=_PURPOSES),
            doors=_texts(m.get("doors"), "doors", 32),
            cti=cti,
            windows=windows,
            nbf=nbf,
            exp=exp,
        )

    def lists(self, sub: str, cti: bytes) -> bool:
        """Whether this entry covers a token with this ``sub`` and ``cti``."""
        return self.cti == cti if self.cti is not None else self.sub == sub


@dataclass(frozen=True, slots=True)
class Roster:
    """An issuer's signed list of the people it authorises at one site (module docstring)."""

    iss: str
    site: str
    seq: int
    iat: int
    entries: tuple[RosterEntry, ...] = ()
    #: the tokens and holders it lists, for the decision's one lookup
    ctis: frozenset[bytes] = field(default=frozenset(), compare=False)
    subs: frozenset[str] = field(default=frozenset(), compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "ctis", frozenset(e.cti for e in self.entries if e.cti is not None)
        )
        object.__setattr__(self, "subs", frozenset(e.sub for e in self.entries if e.cti is None))

    @classmethod
    def new(
        cls,
        iss: str,
        site: str,
        seq: int,
        entries: Iterable[RosterEntry] = (),
        *,
        iat: int | None = None,
    ) -> Roster:
        return cls(
            iss=iss,
            site=site,
            seq=seq,
            iat=int(time.time()) if iat is None else iat,
            entries=tuple(entries),
        )

    def lists(self, sub: str, cti: bytes) -> bool:
        """Whether the roster lists a token with this ``sub`` and ``cti``."""
        return cti in self.ctis or sub in self.subs

    def encode(self) -> bytes:
        m = {
            "iss": self.iss,
            "site": self.site,
            "seq": self.seq,
            "iat": self.iat,
            "entries": [e.to_cbor() for e in self.entries],
        }
        out: bytes = cbor2.dumps(m, canonical=True)
        return out

    def sign(self, key: Ed25519PrivateKey) -> bytes:
        raw = sign1(key, self.encode())
        Roster.decode(raw)  # never hand out what a gateway refuses
        return raw

    @classmethod
    def _from(cls, msg: Sign1) -> Roster:
        m = _map(msg, {"iss", "site", "seq", "iat", "entries"}, "roster")
        entries = m.get("entries")
        if type(entries) is not list or len(entries) > MAX_ROSTER_ENTRIES:
            raise _err(f"entries must be an array of at most {MAX_ROSTER_ENTRIES}")
        parsed = tuple(RosterEntry.from_cbor(e) for e in entries)
        return cls(
            iss=_text(m, "iss") or "",
            site=_text(m, "site") or "",
            seq=_int(m, "seq"),
            iat=_int(m, "iat"),
            entries=parsed,
        )

    @classmethod
    def decode(cls, raw: bytes) -> Roster:
        """Strictly decode, **without** verifying."""
        return cls._from(decode_sign1(raw, ControlMessageError, max_size=MAX_ROSTER))

    @classmethod
    def verify(
        cls, raw: bytes, issuers: KeyRing | Mapping[str, Ed25519PublicKey], *, site: str
    ) -> Roster:
        """Decode and verify with the key of the issuer the roster names, for ``site``.
        Raises ControlMessageError ``malformed``, ``unknown_issuer``, ``bad_signature``
        or ``wrong_site``."""
        msg = decode_sign1(raw, ControlMessageError, max_size=MAX_ROSTER)
        r = cls._from(msg)
        ring = KeyRing.of(issuers)
        key = ring.get(r.iss)
        if key is None:
            raise _err(f"no key for issuer {r.iss!r}", Reason.UNKNOWN_ISSUER)
        if msg.kid is not None and msg.kid != ring.kid(r.iss):
            raise _err(f"kid {msg.kid.hex()} is not issuer {r.iss!r}'s key", Reason.BAD_SIGNATURE)
        msg.verify(key, ControlMessageError)
        if r.site != site:
            raise _err(f"roster for site {r.site!r}, this is {site!r}", Reason.WRONG_SITE)
        return r
