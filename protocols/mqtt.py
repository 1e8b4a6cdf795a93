"""Payloads of the MQTT topics other than ``events`` (CONTRACT §4), for the link and AsyncAPI.

The event envelope and bodies are in :mod:`protocols.events`; signed commands,
revocation lists and tokens are COSE bytes (CONTRACT §2, §5).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from protocols.device import DeviceState
from protocols.health import HealthReason, Overall
from protocols.journal_head import SignedHead

__all__ = ["PROBLEMS", "DeviceAvailability", "DeviceStatePayload", "GatewayStatus", "InventoryItem"]

#: what ``problems`` in a device's retained state may hold (the words of the visit problems)
PROBLEMS = ("lock_jammed", "left_unlocked", "door_left_open", "key_not_returned")


class GatewayStatus(BaseModel):
    """``lockgw/v1/<site>/status`` (retained); ``offline`` is also the Last Will."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    state: Literal["online", "offline"]
    version: str
    started_at: str = Field(description="RFC 3339 UTC, when this gateway process started")
    journal: Literal["ok", "fallback", "unrecorded"] = Field(
        default="ok",
        description="ok: every event is journaled and streamed; fallback: the journal cannot "
        "write, events wait in order in its fallback file and are streamed when it can; "
        "unrecorded: that file cannot be written either, events are kept in memory only "
        "(lost if the gateway stops) - doors still open for valid keys. Re-sent on change.",
    )
    health: Overall | None = Field(
        default=None,
        description="online only: the worst level among reasons (healthy when there is none); "
        "warning: act before care is refused; degraded: planned care is refused for a reason "
        "the site can fix; unhealthy: a door cannot be opened. Re-sent on change.",
    )
    reasons: list[HealthReason] = Field(
        default_factory=list,
        description="online only: everything wrong right now, as lockgw health says it "
        "(code for machines, text in the site's language). Re-sent when one appears, "
        "clears, or its level or words change.",
    )
    head: SignedHead | None = Field(
        default=None,
        description="the newest journal head the gateway signed with the site key: the "
        "journal holds seq 1..head.seq and row head.seq's link is head.hash. Re-sent each "
        "time a new head is signed (every journal.head_interval while events are added, "
        "and at stop); keep the newest (highest seq) you receive and give it to lockgw "
        "audit verify --head to prove the hub's journal was not cut short (docs/audit.md). "
        "Absent from the Last Will (fixed at connect time).",
    )


class DeviceStatePayload(DeviceState):
    """``lockgw/v1/<site>/devices/<device>/state`` (retained): the latest snapshot of one device,
    published for every configured device when the gateway connects (all ``unknown`` for a
    device that never answered) and again on every change. Consumers ignore unknown fields.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    problems: list[str] = Field(
        default_factory=list,
        description="what is wrong right now, until it is put right: lock_jammed, "
        "left_unlocked (the door shut but not locked again: a visit ended so, or locking "
        "it again after an unused or late opening failed), door_left_open, "
        "key_not_returned; empty when nothing is",
    )


class DeviceAvailability(BaseModel):
    """``lockgw/v1/<site>/devices/<device>/availability`` (retained): whether the gateway reaches
    the device. Published for every configured device when the gateway connects and on every
    change. Meaningful only while the gateway's own ``status`` is ``online`` (the broker keeps
    the last value when the gateway is gone)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    state: Literal["online", "offline"]
    reason: str | None = Field(
        default=None, description="offline: why, in words (link lost, no answer, not paired)"
    )


class InventoryItem(BaseModel):
    """One entry of ``lockgw/v1/<site>/inventory`` (retained): the installed base. The
    last entry is the site itself (``{"id": "@site", "kind": "site", ...}``,
    ``gateway.site_keys.inventory_entry``): its public keys and their ids, for the
    platform to pin and for issuers to hand to phones with their credentials
    (``lockgw-unlock-v2``, ``protocols/README.md``)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    id: str
    door: str
    driver: str
    kind: str | None = None
    manufacturer: str = "unknown"
    model: str = "unknown"
    serial: str = "unknown"
    firmware: str = "unknown"
    paired_at: str | None = Field(default=None, description="RFC 3339 UTC")
    sign_key: str | None = Field(
        default=None,
        description="kind site: the site's Ed25519 public key (raw 32 bytes, base64url); it "
        "signs lockgw-unlock-v2 challenges and results",
    )
    exchange_key: str | None = Field(
        default=None,
        description="kind site: the site's X25519 public key (raw 32 bytes, base64url); "
        "phones seal their lockgw-unlock-v2 hello to it (HPKE)",
    )
