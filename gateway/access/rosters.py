"""Signed rosters held per issuer (who an organisation authorises here), with rollback refused.

An issuer's roster for this site replaces its previous one only when its ``seq`` is
higher (as revocation lists, CONTRACT §5). The signed bytes are kept on disk
(``rosters.json`` in the access state directory, through :class:`StateDir`) and verified
again at start against the issuer keys then configured: a roster whose issuer is no
longer consented to, or whose key changed, is not used.

Names stay on the hub. The event stream names people by pseudonym only (``sub``); the
names the organisations chose to show the resident are kept in ``names.json`` — every
person a roster listed, with when a roster last listed them — so the resident's views
name a carer who visited last month even after she left the roster. A name no roster
has listed for ``forget_after`` seconds (the journal's retention) is forgotten.

**A lost file.** When ``rosters.json`` is missing (after the first start) or damaged,
the gateway no longer knows whom the organisations listed. It does not start as if no
roster had been sent: every *affected* issuer goes on the ``awaiting`` list (with the
roster ``seq`` the journal last recorded for it), and until a roster of that issuer
arrives again with at least that seq, a home with ``[access] roster_check = "refuse"``
refuses its planned care (``not_on_roster``, saying the roster was lost); emergency
access keeps working (``gateway.access.controller``). With ``roster_check = "flag"``
nothing is refused (a roster only flags there). The affected issuers are the configured
ones the journal records a roster of (``roster.applied``) or ``names.json`` names — an
issuer that never sent a roster is not awaited, since one may never come. The
``awaiting`` list is persisted in the file, so a restart does not lift it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Final

from gateway.access.state import StateDir, StateFallback, StateHistory
from protocols.control import Roster, RosterEntry
from protocols.cose import KeyRing
from protocols.errors import ControlMessageError

__all__ = [
    "LOST_FLAG",
    "NAMES_FILE",
    "HeldRoster",
    "Person",
    "RosterChange",
    "RosterStore",
    "names_from_json",
    "people_of",
]

_FILE: Final = "rosters.json"
NAMES_FILE: Final = "names.json"


@dataclass(frozen=True, slots=True)
class HeldRoster:
    roster: Roster
    received_at: float
    raw: bytes

    @property
    def iss(self) -> str:
        return self.roster.iss

    @property
    def seq(self) -> int:
        return self.roster.seq

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.roster.seq,
            "iat": self.roster.iat,
            "received_at": self.received_at,
            "raw": base64.b64encode(self.raw).decode(),
        }


@dataclass(frozen=True, slots=True)
class Person:
    """A name from a roster: who ``sub`` of ``iss`` is, for the resident's views."""

    name: str
    role: str
    last_listed: float


def names_from_json(raw: object) -> dict[tuple[str, str], Person]:
    """``names.json`` read back (bad entries skipped)."""
    out: dict[tuple[str, str], Person] = {}
    if not isinstance(raw, dict) or not isinstance(raw.get("issuers"), dict):
        return out
    for iss, people in raw["issuers"].items():
        if not isinstance(people, dict):
            continue
        for sub, p in people.items():
            try:
                out[(str(iss), str(sub))] = Person(
                    str(p["name"]), str(p["role"]), float(p["last_listed"])
                )
            except (KeyError, TypeError, ValueError):
                continue
    return out


@dataclass(frozen=True, slots=True)
class RosterChange:
    """What a newly applied roster changed, person by person (by ``sub``)."""

    added: tuple[RosterEntry, ...]
    removed: tuple[RosterEntry, ...]
    changed: tuple[RosterEntry, ...]


def people_of(entries: tuple[RosterEntry, ...], now: float | None = None) -> dict[str, RosterEntry]:
    """sub → its first entry (a person may hold several tokens); with ``now``, only
    entries valid then."""
    out: dict[str, RosterEntry] = {}
    for e in entries:
        if now is not None and (
            (e.exp is not None and e.exp < now) or (e.nbf is not None and e.nbf > now)
        ):
            continue
        out.setdefault(e.sub, e)
    return out


def _diff(old: Roster | None, new: Roster) -> RosterChange:
    before = people_of(old.entries) if old is not None else {}
    after = people_of(new.entries)

    def entries_of(r: Roster | None, sub: str) -> set[RosterEntry]:
        return {e for e in r.entries if e.sub == sub} if r is not None else set()

    return RosterChange(
        added=tuple(after[s] for s in after if s not in before),
        removed=tuple(before[s] for s in before if s not in after),
        changed=tuple(
            after[s] for s in after if s in before and entries_of(old, s) != entries_of(new, s)
        ),
    )


LOST_FLAG: Final = (
    "the rosters held were lost: tokens are not checked against a roster until each "
    "organisation's roster arrives again (they are retained on the broker)"
)


class RosterStore:
    def __init__(
        self,
        state: StateDir,
        site: str,
        issuers: KeyRing,
        *,
        forget_after: float = 365 * 86400,
        history: StateHistory | None = None,
        now: float = 0.0,
        at_start: bool = True,
    ) -> None:
        """``history``: what the journal says, at start. ``at_start`` False (a reload):
        the file is only read — one gone since the start is not written over, so the
        next start still finds it lost."""
        self._state = state
        self._site = site
        self._forget_after = forget_after
        self._names = names_from_json(state.load(NAMES_FILE))
        self._held: dict[str, HeldRoster] = {}
        #: rosters of issuers no longer configured: written back unchanged, not used
        self._unused: dict[str, Any] = {}
        #: issuer → the lowest roster seq that lifts the wait (the file was lost)
        self.awaiting: dict[str, int] = {}
        #: set when the file was missing or damaged at start (see the module docstring)
        self.fallback: StateFallback | None = None
        loaded = state.read(_FILE)
        raw = loaded.value
        if loaded.problem is None and not isinstance(raw, dict):
            loaded = state.damaged(_FILE, "does not hold rosters")
        if isinstance(raw, dict) and loaded.problem is None:
            self._load(raw, issuers)
        lost = loaded.problem == "damaged" or (
            loaded.problem == "missing" and history is not None and history.has_events
        )
        if lost:
            known = history.roster_seqs if history is not None else {}
            named = {iss for iss, _ in self._names}
            affected = {iss for iss in set(known) | named if iss in issuers}
            for iss in affected:
                self.awaiting[iss] = max(known.get(iss, 0), self.awaiting.get(iss, 0))
            # a missing file where no roster was ever applied lost nothing (an older
            # version wrote the file only with the first roster): no notice for that
            if affected or loaded.problem == "damaged":
                self.fallback = StateFallback(
                    file=_FILE,
                    problem=loaded.problem or "damaged",
                    fallback=LOST_FLAG,
                    at=now,
                    kept_as=loaded.kept_as,
                    detail=loaded.detail,
                    issuers=sorted(affected),
                )
        if loaded.problem is not None and at_start:  # first start or a loss: the file
            self._save()  # exists from now on, and the wait survives a restart

    def _load(self, raw: dict[str, Any], issuers: KeyRing) -> None:
        state = self._state
        site = self._site
        for iss, seq in dict(raw.get("awaiting") or {}).items():
            if isinstance(seq, int):
                self.awaiting[str(iss)] = seq
        for iss, v in raw.get("issuers", {}).items():
            try:
                signed = base64.b64decode(v["raw"], validate=True)
                received_at = float(v["received_at"])
            except (KeyError, TypeError, ValueError) as exc:
                state.problems.append(f"{_FILE}: issuer {iss!r} unreadable ({exc})")
                continue
            if iss not in issuers:
                self._unused[iss] = v
                continue
            try:
                roster = Roster.verify(signed, issuers, site=site)
            except ControlMessageError as exc:
                state.problems.append(f"{_FILE}: issuer {iss!r}'s roster no longer verifies ({exc})")
                continue
            self._held[iss] = HeldRoster(roster, received_at, signed)

    def _save(self) -> bool:
        return self._state.save(
            _FILE,
            {
                "v": 1,
                "issuers": {**self._unused, **{k: h.to_json() for k, h in self._held.items()}},
                "awaiting": dict(sorted(self.awaiting.items())),
            },
        )

    def get(self, iss: str) -> Roster | None:
        held = self._held.get(iss)
        return held.roster if held is not None else None

    def held(self) -> list[HeldRoster]:
        return list(self._held.values())

    def names(self) -> dict[tuple[str, str], Person]:
        """(iss, sub) → the name a roster gave them (current rosters and earlier ones)."""
        return dict(self._names)

    def apply(self, roster: Roster, raw: bytes, received_at: float) -> RosterChange | None:
        """Replace the issuer's roster when ``roster.seq`` is higher; else None (ignored).
        An issuer whose roster was lost is waited for: a roster with at least the seq the
        journal last recorded for it ends the wait; a lower one is a rollback (ignored)."""
        old = self._held.get(roster.iss)
        waited = self.awaiting.get(roster.iss)
        if waited is not None and old is None:
            if roster.seq < waited:
                return None
        elif old is not None and roster.seq <= old.seq:
            return None
        self._held[roster.iss] = HeldRoster(roster, received_at, raw)
        self.awaiting.pop(roster.iss, None)
        names = self._names
        for sub, e in people_of(roster.entries).items():
            names[(roster.iss, sub)] = Person(e.name, e.role, received_at)
        for h in self._held.values():  # still listed elsewhere: not forgotten
            for sub in people_of(h.roster.entries):
                p = names.get((h.iss, sub))
                if p is not None and p.last_listed < received_at:
                    names[(h.iss, sub)] = Person(p.name, p.role, received_at)
        for key in [k for k, p in names.items() if received_at - p.last_listed > self._forget_after]:
            del names[key]
        book: dict[str, dict[str, Any]] = {}
        for (iss, sub), p in sorted(names.items()):
            book.setdefault(iss, {})[sub] = {
                "name": p.name,
                "role": p.role,
                "last_listed": p.last_listed,
            }
        self._state.save(NAMES_FILE, {"v": 1, "issuers": book})
        self._save()
        return _diff(old.roster if old is not None else None, roster)
