"""The platform simulator's stream checker: gaps, duplicates, order — against a real broker."""

from __future__ import annotations

import json

import aiomqtt

from simulators.broker import MosquittoBroker
from simulators.platform import Platform, StreamChecker


def ev(seq: int, eid: str | None = None) -> dict[str, object]:
    return {"v": 1, "id": eid or f"id-{seq}", "seq": seq, "ts": "t", "site": "s", "type": "battery"}


def test_gaps_and_duplicates_are_reported() -> None:
    c = StreamChecker()
    for s in (1, 2, 2, 5, 6, 9):
        c.add(ev(s))
    assert c.duplicates == 1
    assert c.gaps() == [(3, 4), (7, 8)]
    assert "GAPS" in c.summary()


def test_a_redelivered_event_is_a_duplicate_not_out_of_order() -> None:
    c = StreamChecker()
    for s in (1, 2, 3):
        c.add(ev(s))
    assert c.add(ev(2)) is False
    assert c.out_of_order == 0 and c.gaps() == []


async def test_the_platform_sees_events_published_to_the_site(broker: MosquittoBroker) -> None:
    async with Platform(broker.url, "site-x") as platform:
        async with aiomqtt.Client(broker.host, broker.port) as pub:
            for s in range(1, 51):
                await pub.publish("lockgw/v1/site-x/events", json.dumps(ev(s)), qos=1)
            await pub.publish("lockgw/v1/site-x/status", json.dumps({"state": "online"}), qos=1, retain=True)
        await platform.wait_seq(50)
        got = await platform.wait_for(lambda e: e["seq"] == 42)
    assert got["id"] == "id-42"
    assert platform.checker.gaps() == [] and len(platform.checker.events) == 50
