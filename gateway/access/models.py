"""Values the access decision takes and gives (immutable; cheap to build: the hot path)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

from protocols.control import Command, RosterEntry
from protocols.errors import Reason

__all__ = ["AccessRequest", "Decision", "RevocationOutcome", "RevocationStatus", "RosterOutcome"]


@dataclass(frozen=True, slots=True)
class AccessRequest:
    """One attempt at a door: the phone's hello, the challenge nonce and the proof."""

    door: str
    action: str
    nonce: bytes
    proof: bytes
    token: bytes | None = None
    #: the ``cti`` of a token the gateway holds, instead of ``token``
    token_ref: bytes | None = None
    peer: str = "unknown"
    channel: str = "ble"
    #: lockgw-unlock-v2: (SHA-256 of the token or token_ref presented, SHA-256 of the
    #: sealed hello) that the proof covers; None for a v1 exchange
    binding: tuple[bytes, bytes] | None = None


class Decision(NamedTuple):
    """The answer for one attempt. Immutable; a NamedTuple because one is built per
    decision and that is measurably cheaper than a frozen dataclass."""

    granted: bool
    reason: Reason
    iss: str | None = None
    sub: str | None = None
    role: str | None = None
    #: "planned" / "emergency" for phones; "emergency" / "remote" for signed commands
    purpose: str | None = None
    token_id: str | None = None
    #: an emergency entry outside the token's windows (journal it flagged)
    emergency_outside_window: bool = False
    #: this denial makes the door's recent denials suspicious: emit access.suspicious
    suspicious: bool = False
    clock_trusted: bool = True
    #: for people and the journal; never shown to the phone
    detail: str = ""
    #: denials at this door within ``access.suspicious_window`` (for access.suspicious)
    denials: int = 0
    #: granted, but the issuer's current roster does not list the token (journal it flagged)
    not_on_roster: bool = False

    @classmethod
    def for_command(cls, cmd: Command) -> Decision:
        """A grant for a verified remote unlock/open (``AccessController.verify_command``)."""
        purpose = "emergency" if cmd.reason == "alarm" else "remote"
        return cls(
            granted=True,
            reason=Reason.OK,
            iss=cmd.signer,
            sub=cmd.actor,
            purpose=purpose,
            detail=f"remote {cmd.cmd} by {cmd.signer} for {cmd.actor} "
            f"(request {cmd.request_id}, reason {cmd.reason or 'none'})",
        )


@dataclass(frozen=True, slots=True)
class RevocationOutcome:
    status: Literal["applied", "ignored", "refused"]
    issuer: str | None
    seq: int | None
    #: the seq held before (None: no list held)
    held_seq: int | None = None
    cti_count: int = 0
    sub_count: int = 0
    #: why it was refused (malformed, unknown_issuer, bad_signature)
    reason: Reason | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class RosterOutcome:
    status: Literal["applied", "ignored", "refused"]
    issuer: str | None
    seq: int | None
    held_seq: int | None = None
    #: people on the applied roster, and those added / removed / changed by it
    people: int = 0
    added: tuple[RosterEntry, ...] = ()
    removed: tuple[RosterEntry, ...] = ()
    changed: tuple[RosterEntry, ...] = ()
    #: people the site's rosters list in all (for ``site.max_people``)
    site_people: int = 0
    reason: Reason | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class RevocationStatus:
    """One issuer's revocation freshness, for health and monitoring."""

    iss: str
    seq: int | None
    iat: int | None
    received_at: float | None
    age: float | None
    max_age: int | None
    stale: bool
    cti_count: int
    sub_count: int
