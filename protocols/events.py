"""The events lockgw publishes (CONTRACT §4): the envelope and one model per type.

Producers (access decision, device supervision, phone link, MQTT inbound) build
one of the ``*Event`` bodies below and hand it to the journal, which assigns
``id`` (UUIDv7), ``seq`` and ``ts`` and wraps it in an :class:`Envelope`.
The AsyncAPI document is generated from these models.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from protocols.health import HealthLevel

__all__ = [
    "EVENT_MODELS",
    "AccessDecisionEvent",
    "AlarmEvent",
    "BatteryEvent",
    "Channel",
    "ClockUntrustedEvent",
    "CommandResultEvent",
    "DeviceOnlineEvent",
    "DoorLeftOpenEvent",
    "DoorState",
    "Envelope",
    "EventBody",
    "EventType",
    "GatewayEvent",
    "HealthEvent",
    "JournalRecoveredEvent",
    "JournalRestartEvent",
    "KeyNotReturnedEvent",
    "KeysafeStateEvent",
    "LateAnswerEvent",
    "LockState",
    "LockStateEvent",
    "PairingEvent",
    "RelockEvent",
    "RepublishedEvent",
    "RevocationAppliedEvent",
    "RosterAppliedEvent",
    "RosterOverLimitEvent",
    "RosterPerson",
    "SiteKeyCreatedEvent",
    "StateFallbackEvent",
    "SuspiciousEvent",
    "VisitEvent",
]


class EventType(StrEnum):
    ACCESS_GRANTED = "access.granted"
    ACCESS_DENIED = "access.denied"
    ACCESS_SUSPICIOUS = "access.suspicious"
    LOCK_STATE = "lock.state"
    KEYSAFE_STATE = "keysafe.state"
    KEYSAFE_KEY_NOT_RETURNED = "keysafe.key_not_returned"
    DOOR_LEFT_OPEN = "door.left_open"
    BATTERY = "battery"
    DEVICE_ONLINE = "device.online"
    DEVICE_OFFLINE = "device.offline"
    DEVICE_PAIRED = "device.paired"
    DEVICE_PAIRING_UNKNOWN = "device.pairing_unknown"
    DEVICE_PAIRING_REMOVED = "device.pairing_removed"
    COMMAND_RESULT = "command.result"
    VISIT_STARTED = "visit.started"
    VISIT_ENDED = "visit.ended"
    ALARM_RAISED = "alarm.raised"
    ALARM_CLEARED = "alarm.cleared"
    REVOCATION_APPLIED = "revocation.applied"
    REVOCATION_REPUBLISHED = "revocation.republished"
    ROSTER_APPLIED = "roster.applied"
    ROSTER_REPUBLISHED = "roster.republished"
    ROSTER_OVER_LIMIT = "roster.over_limit"
    CLOCK_UNTRUSTED = "clock.untrusted"
    STATE_FALLBACK = "state.fallback"
    GATEWAY_STARTED = "gateway.started"
    GATEWAY_STOPPING = "gateway.stopping"
    JOURNAL_RECOVERED = "journal.recovered"
    SITE_KEY_CREATED = "site.key_created"
    HEALTH_WARNING = "health.warning"
    HEALTH_CLEARED = "health.cleared"
    JOURNAL_DAMAGED = "journal.damaged"
    JOURNAL_LOST = "journal.lost"
    DEVICE_LATE_ANSWER = "device.late_answer"
    DOOR_RELOCKED = "door.relocked"
    DOOR_LEFT_UNLOCKED = "door.left_unlocked"


class LockState(StrEnum):
    LOCKED = "locked"
    UNLOCKED = "unlocked"
    UNLATCHED = "unlatched"
    JAMMED = "jammed"
    UNKNOWN = "unknown"


class DoorState(StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    UNKNOWN = "unknown"


class Channel(StrEnum):
    PHONE = "phone"
    COMMAND = "command"


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AccessDecisionEvent(_Body):
    """``access.granted`` / ``access.denied``: one access attempt, whatever its outcome."""

    type: Literal["access.granted", "access.denied"]
    door: str
    device: str | None = None
    iss: str | None = None
    sub: str | None = None
    role: str | None = None
    purpose: Literal["planned", "emergency", "remote"] | None = Field(
        default=None, description="remote = a signed command that was not for an alarm"
    )
    action: str
    token_id: str | None = Field(default=None, description="hex of the token's cti")
    channel: Channel
    reason: str
    emergency_outside_window: bool = Field(
        default=False, description="an emergency entry outside the token's windows (flagged)"
    )
    actor: str | None = Field(default=None, description="command channel: the signer's actor")
    request_id: str | None = None
    not_on_roster: bool = Field(
        default=False,
        description="granted although the issuer's current roster does not list the token "
        "(flagged; access.roster_check = \"refuse\" refuses planned care instead)",
    )
    count: int | None = Field(
        default=None,
        description="malformed phone attempts this row stands for: they are journaled as one "
        "row per source per phone_link.flood_interval (the first at once with count 1, then one "
        "row per interval with the count since); null on every other row",
    )
    source: str | None = Field(
        default=None,
        description="malformed rows: the phone's address without port (or ble:<address>); "
        "\"other\" for sources beyond the 64 counted by name in one interval",
    )


class SuspiciousEvent(_Body):
    type: Literal["access.suspicious"] = "access.suspicious"
    door: str | None = Field(
        description="the door the denials were at; null for a flood on the phone link itself"
    )
    count: int = Field(
        description="denials at the door; for a flood, connections the phone link closed "
        "to make room for others"
    )
    window: int = Field(description="seconds over which the denials were counted")
    source: str | None = Field(
        default=None,
        description="a flood: the address the connections came from (without port)",
    )


class LockStateEvent(_Body):
    type: Literal["lock.state"] = "lock.state"
    device: str
    door: str
    lock: LockState
    door_state: DoorState = DoorState.UNKNOWN


class KeysafeStateEvent(_Body):
    type: Literal["keysafe.state"] = "keysafe.state"
    device: str
    door: str
    compartment: Literal["open", "closed", "unknown"]
    key: Literal["present", "absent", "unknown"]


class KeyNotReturnedEvent(_Body):
    type: Literal["keysafe.key_not_returned"] = "keysafe.key_not_returned"
    device: str
    door: str
    opened_at: str
    minutes: int


class DoorLeftOpenEvent(_Body):
    type: Literal["door.left_open"] = "door.left_open"
    device: str
    door: str
    opened_at: str
    seconds: int


class BatteryEvent(_Body):
    type: Literal["battery"] = "battery"
    device: str
    door: str
    level: int = Field(ge=0, le=100)
    low: bool
    critical: bool
    days_left: float | None = None


class DeviceOnlineEvent(_Body):
    type: Literal["device.online", "device.offline"]
    device: str
    door: str
    reason: str | None = None


class PairingEvent(_Body):
    """What the gateway finds among a device's pairings (carelock: at every connect and
    health poll): its own new pairing, one it did not make (a warning: someone paired
    during a pairing window; remove it with ``lockgw devices pairings DEVICE --remove
    KEY_ID``), or one that is gone."""

    type: Literal["device.paired", "device.pairing_unknown", "device.pairing_removed"]
    device: str
    door: str
    key_id: str = Field(description="hex of the pairing's key id as the device lists it")


class CommandResultEvent(_Body):
    type: Literal["command.result"] = "command.result"
    request_id: str | None
    cmd: str | None
    ok: bool
    reason: str
    actor: str | None = None
    door: str | None = None
    count: int | None = Field(
        default=None,
        description="refused commands this row stands for: beyond 100 refusals in one "
        "interval they are journaled as one row per reason (request_id null) with a count; "
        "null on every other row",
    )


class VisitEvent(_Body):
    type: Literal["visit.started", "visit.ended"]
    visit: str = Field(description="visit id: the id of the access.granted event that began it")
    door: str
    device: str | None = None
    iss: str | None = None
    sub: str | None = None
    role: str | None = None
    purpose: str | None = None
    opened: str | None = Field(default=None, description="when access was granted")
    door_opened: str | None = None
    door_closed: str | None = None
    relocked: bool | None = None
    key_returned: bool | None = None
    duration_s: float | None = None
    problems: list[str] = Field(default_factory=list)


class AlarmEvent(_Body):
    type: Literal["alarm.raised", "alarm.cleared"]
    actor: str
    request_id: str
    reason: str | None = None


class RevocationAppliedEvent(_Body):
    type: Literal["revocation.applied"] = "revocation.applied"
    iss: str
    #: the applied list's own ``seq`` (CONTRACT §5); named apart from the envelope's ``seq``
    list_seq: int
    cti_count: int
    sub_count: int


class RosterPerson(_Body):
    """One person on a roster, by pseudonym: names stay on the hub (the resident's views)."""

    sub: str
    role: str


class RosterAppliedEvent(_Body):
    """An issuer's new roster for this site was verified and now holds (who may enter)."""

    type: Literal["roster.applied"] = "roster.applied"
    iss: str
    #: the roster's own ``seq``; named apart from the envelope's ``seq``
    list_seq: int
    people: int = Field(description="people on this roster")
    added: list[RosterPerson] = Field(default_factory=list)
    removed: list[RosterPerson] = Field(default_factory=list)
    changed: list[RosterPerson] = Field(
        default_factory=list, description="still listed, with other tokens, times or doors"
    )


class RepublishedEvent(_Body):
    """The broker's retained copy of an issuer's revocation list (or of its roster for this
    site) had been replaced by something older or unusable, and the gateway put the newest
    list it holds back, as retained: the issuer's signed bytes, unchanged. A gateway
    installed next, or one that lost its state, starts from that list again."""

    type: Literal["revocation.republished", "roster.republished"]
    iss: str
    #: the seq of the list put back (the newest the gateway holds)
    list_seq: int
    topic: str
    found: Literal["older", "other_issuer", "invalid", "cleared"] = Field(
        description="what had replaced it: an older list of the issuer (a replay), another "
        "issuer's list, bytes that do not verify, or nothing (the retained message cleared)"
    )
    found_seq: int | None = Field(
        default=None, description="the seq of what was found, when it could be read"
    )
    arrivals: int = Field(
        default=1,
        description="how many such messages arrived since the previous put-back (a replay "
        "sent over and over is put right, and journaled, at most every few seconds)",
    )


class RosterOverLimitEvent(_Body):
    """The site's rosters list more people than ``site.max_people`` (the CCV's advice:
    at most five people can open a key safe)."""

    type: Literal["roster.over_limit"] = "roster.over_limit"
    people: int
    limit: int


class ClockUntrustedEvent(_Body):
    type: Literal["clock.untrusted"] = "clock.untrusted"
    now: str
    floor: str
    detail: str


class StateFallbackEvent(_Body):
    """``state.fallback``: a state file that protects security was missing or damaged
    when the gateway started, and the gateway took the safe side instead of starting
    empty. One event per file, just after ``gateway.started``."""

    type: Literal["state.fallback"] = "state.fallback"
    file: str = Field(
        description="site/sign.key or site/exchange.key (under <data_dir>/: a damaged site "
        "key moved aside and made anew), or time_floor.json, revocations.json, commands.json, "
        "alarm.json, "
        "held/<token id>.cwt, rosters.json or names.json (under <data_dir>/access/)"
    )
    problem: Literal["missing", "damaged"] = Field(
        description="missing: deleted after the first start; damaged: unreadable, wrong "
        "checksum or wrong content"
    )
    fallback: str = Field(description="what the gateway does instead, in words")
    kept_as: str | None = Field(
        default=None, description="where a damaged file was set aside for inspection"
    )
    issuers: list[str] = Field(
        default_factory=list,
        description="revocations.json: the issuers whose planned care is refused "
        "(revocation_stale) until their list arrives again; rosters.json: the issuers "
        "whose roster is awaited again (with roster_check = refuse their planned care is "
        "refused, not_on_roster, until it arrives)",
    )
    until: str | None = Field(
        default=None,
        description="commands.json: commands expiring before this time are refused "
        "(nonce_reused); RFC 3339 UTC",
    )


class GatewayEvent(_Body):
    type: Literal["gateway.started", "gateway.stopping"]
    version: str
    detail: str | None = None


class JournalRecoveredEvent(_Body):
    """``journal.recovered``: the journal records again after a time it could not (a full
    disk or ``journal.max_bytes``, a damaged file, its writer restarting). The events of
    that time waited, in order, in the fallback file beside it and were published just
    before this one, with ``seq`` ``first_seq``..``last_seq``; each kept the ``id`` the
    phone heard and its ``ts`` (when it happened), so ``ts`` goes back at ``first_seq``."""

    type: Literal["journal.recovered"] = "journal.recovered"
    since: str = Field(description="ts of the first event the journal could not take")
    until: str = Field(description="ts of the last one")
    events: int = Field(description="how many waited in the fallback and are now journaled")
    first_seq: int | None = None
    last_seq: int | None = None
    problem: str = Field(description="why the journal could not take them, in words")
    not_durable: int = Field(
        default=0,
        description="of those, how many were kept in memory only: the fallback file could "
        "not be written either (they would have been lost had the gateway stopped)",
    )
    lost: int = Field(
        default=0,
        description="events not kept at all (too many waiting); the gateway's log has them",
    )


class SiteKeyCreatedEvent(_Body):
    """``site.key_created``: the gateway made one of the site's own keys in
    ``<data_dir>/site/`` (on its first start, or after the file was moved aside). Its
    public half is in the retained inventory (the entry of ``kind: "site"``); a platform
    that pinned another key for this site hears here that it changed."""

    type: Literal["site.key_created"] = "site.key_created"
    key: str = Field(description="sign (Ed25519: signs the journal's chain head)")
    algorithm: str = Field(description="Ed25519")
    kid: str = Field(description="first 8 bytes of SHA-256 of the raw public key, hex")
    public: str = Field(description="the raw public key, unpadded base64url")
class JournalRestartEvent(_Body):
    """``journal.damaged``: at start-up the journal file was damaged (SQLite could not
    read it, or its hash chain did not verify); it was moved aside (``kept_as``) and a
    new journal started. ``journal.lost``: the journal was missing, empty, or ended
    before the seq its head file says was committed. Either way this event is the
    first row after the restart: its ``seq`` is ``last_seq`` + 1 (no seq is used
    twice) and its hash-chain link goes on from ``link_hash``, the link of row
    ``link_seq`` — the last row that verified (``link_from`` ``journal``), the head
    file's record (``head_file``) or none (``genesis``). Rows ``link_seq`` + 1 ..
    ``last_seq`` are not in the journal (they may be in the kept file)."""

    type: Literal["journal.damaged", "journal.lost"]
    problem: str = Field(description="what was found, in words")
    kept_as: str | None = Field(
        default=None, description="where the damaged (or emptied) file was moved, for forensics"
    )
    last_seq: int = Field(description="the highest seq known before the restart")
    link_seq: int = Field(description="the row the chain goes on from")
    link_hash: str = Field(description="that row's link (hex SHA-256)")
    link_from: Literal["journal", "head_file", "genesis"]


class HealthEvent(_Body):
    """``health.warning``: a health reason appeared (it was there at two looks running,
    a few seconds apart) or its level changed; ``health.cleared``: it is gone. Said once
    each, not at every look; the retained ``status`` carries the full present list.
    After a restart each reason still present is said again."""

    type: Literal["health.warning", "health.cleared"]
    code: str = Field(
        description="the reason's stable code (revocation.stale, consent.ending, "
        "device.offline, ...; docs/install.md)"
    )
    level: HealthLevel = Field(
        description="warning / degraded / unhealthy (for health.cleared: the level it had)"
    )
    text: str = Field(description="the reason in words, in the site's language")
    subject: str | None = Field(
        default=None, description="a device id, an issuer id or a state file, when it is one"
    )


class LateAnswerEvent(_Body):
    """``device.late_answer``: a device carried out an action after the door had given
    up on it (``phone_link.device_timeout``): the phone (or the command's sender) was
    told ``device_unavailable`` and the audit says so (``attempt``), but the bolt moved.
    Attributed to that attempt; the gateway then locks the door again (``door.relocked``
    or ``door.left_unlocked``)."""

    type: Literal["device.late_answer"] = "device.late_answer"
    door: str
    device: str
    action: str
    attempt: str = Field(description="id of the attempt's access.denied event")
    lock: str | None = Field(default=None, description="the lock's state the late answer reported")
    iss: str | None = None
    sub: str | None = None
    actor: str | None = None
    request_id: str | None = None


class RelockEvent(_Body):
    """``door.relocked``: the gateway locked a door it had unlocked that nobody used (no
    door-opened event within ``[access] relock_unused_after``: a remote opening nobody
    came for, a carer who turned back) or that a late device answer unlocked.
    ``door.left_unlocked``: locking it failed; the door stays a health problem until the
    lock reports locked again. ``why`` ends in ``_before_restart`` when the opening was
    still waiting for its relock when the gateway stopped or crashed, and the gateway,
    started again, found the lock still unlocked (the journal said the opening was its
    own and not used or locked since)."""

    type: Literal["door.relocked", "door.left_unlocked"]
    door: str
    device: str
    why: Literal[
        "late_answer", "not_opened", "late_answer_before_restart", "not_opened_before_restart"
    ] = Field(
        description="late_answer: a late device answer unlocked it; not_opened: a granted "
        "unlock nobody used within [access] relock_unused_after; *_before_restart: the same, "
        "still waiting when the gateway stopped or crashed, relocked after its start"
    )
    attempt: str = Field(description="id of the event of the opening it undoes")
    detail: str | None = Field(default=None, description="door.left_unlocked: why locking failed")
    iss: str | None = None
    sub: str | None = None
    actor: str | None = None
    request_id: str | None = None


EventBody = Annotated[
    AccessDecisionEvent
    | SuspiciousEvent
    | LockStateEvent
    | KeysafeStateEvent
    | KeyNotReturnedEvent
    | DoorLeftOpenEvent
    | BatteryEvent
    | DeviceOnlineEvent
    | PairingEvent
    | CommandResultEvent
    | VisitEvent
    | AlarmEvent
    | RevocationAppliedEvent
    | RepublishedEvent
    | RosterAppliedEvent
    | RosterOverLimitEvent
    | ClockUntrustedEvent
    | StateFallbackEvent
    | GatewayEvent
    | JournalRecoveredEvent
    | SiteKeyCreatedEvent
    | HealthEvent
    | JournalRestartEvent
    | LateAnswerEvent
    | RelockEvent,
    Field(discriminator="type"),
]

EVENT_MODELS: tuple[type[_Body], ...] = (
    AccessDecisionEvent,
    SuspiciousEvent,
    LockStateEvent,
    KeysafeStateEvent,
    KeyNotReturnedEvent,
    DoorLeftOpenEvent,
    BatteryEvent,
    DeviceOnlineEvent,
    PairingEvent,
    CommandResultEvent,
    VisitEvent,
    AlarmEvent,
    RevocationAppliedEvent,
    RepublishedEvent,
    RosterAppliedEvent,
    RosterOverLimitEvent,
    ClockUntrustedEvent,
    StateFallbackEvent,
    GatewayEvent,
    JournalRecoveredEvent,
    SiteKeyCreatedEvent,
    HealthEvent,
    JournalRestartEvent,
    LateAnswerEvent,
    RelockEvent,
)


class Envelope(BaseModel):
    """What is journaled and published: ``{"v": 1, "id", "seq", "ts", "site", "type", ...fields}``."""

    model_config = ConfigDict(frozen=True)

    v: Literal[1] = 1
    id: str
    seq: int = Field(ge=1)
    ts: str
    site: str
    body: EventBody

    @property
    def type(self) -> str:
        return self.body.type

    def to_wire(self) -> dict[str, Any]:
        """The flat JSON object of CONTRACT §4."""
        out: dict[str, Any] = {
            "v": 1,
            "id": self.id,
            "seq": self.seq,
            "ts": self.ts,
            "site": self.site,
        }
        out.update(self.body.model_dump(mode="json"))
        return out
