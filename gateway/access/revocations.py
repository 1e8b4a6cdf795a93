"""Revocation lists held per issuer (CONTRACT §5), persisted, with rollback refused.

**A lost file.** When ``revocations.json`` is missing (after the first start) or
damaged, the gateway no longer knows whom the lists it held revoked. It does not
start empty: every *affected* issuer goes on the ``awaiting`` list, and its
planned-care tokens are refused (``revocation_stale``) until a list of that issuer
arrives again with a ``seq`` at least the one the journal last recorded for it
(equal is accepted: the same list delivered again; lower is a rollback and refused).
Emergency access keeps working (``gateway.access.controller``). The affected issuers
are those whose lists the journal records (``revocation.applied``); when the journal
does not hold the whole history (a retention cut), every configured issuer. The
``awaiting`` list is itself persisted, so a restart does not lift it.

Each held list keeps the issuer's signed bytes (``raw``, base64 in the file), so the
gateway can put the newest list back on the broker unchanged when the retained copy
is replaced by an older one (``gateway.mqtt.healing``). A list held from before the
bytes were kept has ``raw`` None until the issuer's next list arrives.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from gateway.access.state import StateDir, StateFallback, StateHistory
from protocols.control import RevocationList

__all__ = ["HeldList", "RevocationStore"]

_FILE: Final = "revocations.json"


@dataclass(frozen=True, slots=True)
class HeldList:
    iss: str
    seq: int
    iat: int
    received_at: float
    cti: frozenset[bytes]
    sub: frozenset[str]
    #: the issuer's signed bytes (COSE_Sign1), as they arrived
    raw: bytes | None = None

    def age(self, now: float) -> float:
        """Seconds since the list was made — by its signed ``iat`` or when it arrived,
        whichever is earlier (a re-delivered old list is not fresh; a future ``iat`` is
        not believed)."""
        return now - min(float(self.iat), self.received_at)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "seq": self.seq,
            "iat": self.iat,
            "received_at": self.received_at,
            "cti": sorted(c.hex() for c in self.cti),
            "sub": sorted(self.sub),
        }
        if self.raw is not None:
            out["raw"] = base64.b64encode(self.raw).decode()
        return out


class RevocationStore:
    def __init__(
        self,
        state: StateDir,
        *,
        issuers: Iterable[str] = (),
        history: StateHistory | None = None,
        now: float = 0.0,
    ) -> None:
        self._state = state
        self._lists: dict[str, HeldList] = {}
        #: issuer → the lowest list seq that lifts the wait (the file was lost)
        self.awaiting: dict[str, int] = {}
        #: set when the file was missing or damaged at start (see the module docstring)
        self.fallback: StateFallback | None = None
        loaded = state.read(_FILE)
        raw = loaded.value
        if loaded.problem is None and not isinstance(raw, dict):
            loaded = state.damaged(_FILE, "does not hold revocation lists")
        if isinstance(raw, dict) and loaded.problem is None:
            for iss, v in raw.get("issuers", {}).items():
                try:
                    self._lists[iss] = HeldList(
                        iss=iss,
                        seq=int(v["seq"]),
                        iat=int(v["iat"]),
                        received_at=float(v["received_at"]),
                        cti=frozenset(bytes.fromhex(c) for c in v["cti"]),
                        sub=frozenset(str(s) for s in v["sub"]),
                        raw=_raw(v.get("raw")),
                    )
                except (KeyError, TypeError, ValueError, binascii.Error) as exc:
                    state.problems.append(f"revocations.json: issuer {iss!r} unreadable ({exc})")
                    self.awaiting[str(iss)] = _int_or_zero(v, "seq")
            for iss, seq in dict(raw.get("awaiting") or {}).items():
                self.awaiting[str(iss)] = max(int(seq), self.awaiting.get(str(iss), 0))
        lost = loaded.problem == "damaged" or (
            loaded.problem == "missing" and history is not None and history.has_events
        )
        if lost:
            known = history.revocation_seqs if history is not None else {}
            complete = history.complete if history is not None else False
            affected = set(known) | (set() if complete else set(issuers))
            for iss in affected:
                self.awaiting[iss] = max(known.get(iss, 0), self.awaiting.get(iss, 0))
            if affected:
                names = ", ".join(sorted(affected))
                fallback = (
                    f"planned care of {names} is refused (revocation_stale) until each sends "
                    "its revocation list again; emergency access still opens"
                )
            else:
                fallback = (
                    "the journal shows no revocation list was ever applied here, so none was "
                    "lost; planned care is not restricted"
                )
            self.fallback = StateFallback(
                file=_FILE,
                problem=loaded.problem or "damaged",
                fallback=fallback,
                at=now,
                kept_as=loaded.kept_as,
                detail=loaded.detail,
                issuers=sorted(affected),
            )
        if loaded.problem is not None:  # first start or a loss: the file exists from now on
            self._save()

    def _save(self) -> bool:
        return self._state.save(
            _FILE,
            {
                "v": 1,
                "issuers": {k: h.to_json() for k, h in self._lists.items()},
                "awaiting": dict(sorted(self.awaiting.items())),
            },
        )

    def get(self, iss: str) -> HeldList | None:
        return self._lists.get(iss)

    def is_revoked(self, iss: str, cti: bytes, sub: str) -> bool:
        held = self._lists.get(iss)
        return held is not None and (cti in held.cti or sub in held.sub)

    def apply(
        self, rl: RevocationList, received_at: float, raw: bytes | None = None
    ) -> HeldList | None:
        """Replace the issuer's list when ``rl.seq`` is higher; else return None (ignored).
        An issuer whose list was lost is waited for: a list with at least the seq the
        journal last recorded for it replaces the lost one; a lower one is a rollback.
        ``raw``: the signed bytes ``rl`` was verified from, kept to be published again."""
        old = self._lists.get(rl.iss)
        waited = self.awaiting.get(rl.iss)
        if waited is not None and old is None:
            if rl.seq < waited:
                return None
        elif old is not None and rl.seq <= old.seq:
            return None
        new = HeldList(rl.iss, rl.seq, rl.iat, received_at, rl.cti, rl.sub, raw)
        self._lists[rl.iss] = new
        self.awaiting.pop(rl.iss, None)
        self._save()
        return new


def _int_or_zero(v: Any, key: str) -> int:
    try:
        return int(v[key])
    except (KeyError, TypeError, ValueError):
        return 0


def _raw(v: Any) -> bytes | None:
    return base64.b64decode(v, validate=True) if isinstance(v, str) else None
