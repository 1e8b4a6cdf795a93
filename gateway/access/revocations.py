"""Revocation lists held per issuer (CONTRACT §5), persisted, with rollback refused."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from gateway.access.state import StateDir
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

    def age(self, now: float) -> float:
        """Seconds since the list was made — by its signed ``iat`` or when it arrived,
        whichever is earlier (a re-delivered old list is not fresh; a future ``iat`` is
        not believed)."""
        return now - min(float(self.iat), self.received_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "iat": self.iat,
            "received_at": self.received_at,
            "cti": sorted(c.hex() for c in self.cti),
            "sub": sorted(self.sub),
        }


class RevocationStore:
    def __init__(self, state: StateDir) -> None:
        self._state = state
        self._lists: dict[str, HeldList] = {}
        raw = state.load(_FILE)
        if isinstance(raw, dict):
            for iss, v in raw.get("issuers", {}).items():
                try:
                    self._lists[iss] = HeldList(
                        iss=iss,
                        seq=int(v["seq"]),
                        iat=int(v["iat"]),
                        received_at=float(v["received_at"]),
                        cti=frozenset(bytes.fromhex(c) for c in v["cti"]),
                        sub=frozenset(str(s) for s in v["sub"]),
                    )
                except (KeyError, TypeError, ValueError) as exc:
                    state.problems.append(f"revocations.json: issuer {iss!r} unreadable ({exc})")

    def get(self, iss: str) -> HeldList | None:
        return self._lists.get(iss)

    def is_revoked(self, iss: str, cti: bytes, sub: str) -> bool:
        held = self._lists.get(iss)
        return held is not None and (cti in held.cti or sub in held.sub)

    def apply(self, rl: RevocationList, received_at: float) -> HeldList | None:
        """Replace the issuer's list when ``rl.seq`` is higher; else return None (ignored)."""
        old = self._lists.get(rl.iss)
        if old is not None and rl.seq <= old.seq:
            return None
        new = HeldList(rl.iss, rl.seq, rl.iat, received_at, rl.cti, rl.sub)
        self._lists[rl.iss] = new
        self._state.save(
            _FILE, {"v": 1, "issuers": {k: h.to_json() for k, h in self._lists.items()}}
        )
        return new
