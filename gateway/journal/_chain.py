"""The journal's hash chain and wire helpers: pure functions, no I/O, standard library only
(the journal's writer process imports this and nothing heavier).

Each row's link is ``SHA-256(previous link || payload)`` where ``payload`` is the
exact UTF-8 JSON published on MQTT (CONTRACT §4). The first row links to
:data:`GENESIS` (32 zero bytes); after retention the oldest kept row links to the
checkpoint's stored hash.
"""

from __future__ import annotations

import hashlib
import os
import time
from datetime import UTC, datetime

__all__ = ["GENESIS", "link", "utc_ms", "uuid7", "wire_payload"]

GENESIS = bytes(32)


def link(prev: bytes, payload: bytes) -> bytes:
    return hashlib.sha256(prev + payload).digest()


def uuid7(ms: int | None = None) -> str:
    """An RFC 9562 UUIDv7: 48-bit Unix milliseconds, version 7, variant 10, 74 random bits."""
    if ms is None:
        ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def utc_ms(ns: int) -> str:
    """RFC 3339 UTC with milliseconds: ``2026-11-23T22:45:01.123Z``."""
    ms = ns // 1_000_000
    dt = datetime.fromtimestamp(ms // 1000, UTC)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def wire_payload(eid: str, seq: int, ts: str, site_json: str, body_json: str) -> bytes:
    """The flat envelope JSON of CONTRACT §4 (``body_json`` is the body's own JSON object)."""
    head = f'{{"v":1,"id":"{eid}","seq":{seq},"ts":"{ts}","site":{site_json},'
    return (head + body_json[1:]).encode()

