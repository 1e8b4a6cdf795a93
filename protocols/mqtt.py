"""Payloads of the MQTT topics other than ``events`` (CONTRACT §4), for the link and AsyncAPI.

The event envelope and bodies are in :mod:`protocols.events`; signed commands,
revocation lists and tokens are COSE bytes (CONTRACT §2, §5).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from protocols.device import DeviceState

__all__ = ["DeviceStatePayload", "GatewayStatus", "InventoryItem"]


class GatewayStatus(BaseModel):
    """``lockgw/v1/<site>/status`` (retained); ``offline`` is also the Last Will."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    state: Literal["online", "offline"]
    version: str
    started_at: str = Field(description="RFC 3339 UTC, when this gateway process started")


class DeviceStatePayload(DeviceState):
    """``lockgw/v1/<site>/devices/<device>/state`` (retained): the latest snapshot of one device.

    The device supervisor may add fields (``online``, ``last_seen``); consumers ignore unknown ones.
    """

    model_config = ConfigDict(frozen=True, extra="allow")


class InventoryItem(BaseModel):
    """One entry of ``lockgw/v1/<site>/inventory`` (retained): the installed base."""

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
