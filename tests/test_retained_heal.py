"""The broker's retained revocation lists and rosters put right by the gateway
(``gateway.mqtt.healing``): a replayed older list, an emptied topic, with the gateway
running and across a restart — what the broker holds, what is journaled, what the
phone hears."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from test_door_process import expect, home, west, windows_now

from gateway.mqtt.healing import Found, Kind, RetainedHealer
from protocols.events import Envelope, EventBody, RepublishedEvent
from simulators.broker import MosquittoBroker
from simulators.platform import Platform
from simulators.site import Carer

pytestmark = pytest.mark.slow


async def broker_holds(platform: Platform, topic: str, want: bytes, timeout: float = 15.0) -> None:
    """Until a gateway connecting now would be handed ``want`` on ``topic``."""
    async with asyncio.timeout(timeout):
        while await platform.retained(topic, wait=0.5) != want:  # noqa: ASYNC110 - the broker offers no event for it
            await asyncio.sleep(0.2)


async def test_an_older_list_published_retained_is_replaced_by_the_newest_held(
    tmp_path: Any, broker: MosquittoBroker
) -> None:
    inside, _ = windows_now()
    org = west()
    async with home(tmp_path, broker, [org]) as (sim, platform):
        anna = Carer("Anna", "c-7f31", org, "verzorgende")
        sim.issue(anna, windows=inside)
        revocations = f"lockgw/v1/org/{org.id}/revocations"
        rosters = f"lockgw/v1/org/{org.id}/rosters/{sim.site}"
        old_list, new_list = sim.revocation(org, 1), sim.revocation(org, 2, cti=(anna.cti,))
        old_roster, new_roster = sim.roster(org, 1, [anna]), sim.roster(org, 2, [])

        await platform.send_revocation(org.id, new_list)
        await platform.wait_for(lambda e: e["type"] == "revocation.applied" and e["list_seq"] == 2)
        await platform.send_roster(org.id, new_roster)
        await platform.wait_for(lambda e: e["type"] == "roster.applied" and e["list_seq"] == 2)

        # a replay of the older list and roster, retained: the broker holds them for a
        # moment, the gateway ignores them and puts the issuer's newest bytes back
        await platform.send_revocation(org.id, old_list)
        await platform.send_roster(org.id, old_roster)
        ev = await platform.wait_for(lambda e: e["type"] == "revocation.republished")
        assert (ev["iss"], ev["list_seq"], ev["found"], ev["found_seq"]) == (org.id, 2, "older", 1)
        assert ev["topic"] == revocations
        ev = await platform.wait_for(lambda e: e["type"] == "roster.republished")
        assert (ev["list_seq"], ev["found"], ev["found_seq"], ev["topic"]) == (2, "older", 1, rosters)
        await broker_holds(platform, revocations, new_list)
        await broker_holds(platform, rosters, new_roster)
        # and the door still goes by the newest list: Anna's token stays revoked
        await expect(sim, platform, anna, "revoked")

        # the gateway down, the replay again: it is put right when the gateway connects
        # (the signed bytes it put back were kept on disk), and an emptied roster topic too
        assert await sim.stop("gateway") == 0
        await platform.send_revocation(org.id, old_list)
        before = platform.checker.last_seq
        await sim.start_gateway()
        ev = await platform.wait_for(
            lambda e: e["type"] == "revocation.republished", after_seq=before, timeout=30
        )
        assert (ev["list_seq"], ev["found"]) == (2, "older")
        await broker_holds(platform, revocations, new_list)
        await platform.send(rosters, b"", retain=True)
        ev = await platform.wait_for(lambda e: e["type"] == "roster.republished", after_seq=before)
        assert (ev["list_seq"], ev["found"], ev["found_seq"]) == (2, "cleared", None)
        await broker_holds(platform, rosters, new_roster)
        assert not [e for e in platform.checker.events if e["type"] == "revocation.applied"][1:]


# -- the healer's own rules, in process --------------------------------------------------


class _Sink:
    def __init__(self) -> None:
        self.bodies: list[EventBody] = []

    async def emit(self, body: EventBody) -> Envelope:
        self.bodies.append(body)
        return Envelope(
            id="0", seq=len(self.bodies), ts="2026-01-01T00:00:00.000Z", site="s", body=body
        )


def _healer(
    held: dict[str, tuple[int, bytes]], sent: list[tuple[str, bytes]], *, connected: bool = True
) -> tuple[RetainedHealer, _Sink]:
    sink = _Sink()

    async def publish(topic: str, payload: bytes) -> bool:
        sent.append((topic, payload))
        return connected

    def lookup(kind: Kind, iss: str) -> tuple[int, bytes] | None:
        return held.get(f"{kind}:{iss}")

    pub: Callable[[str, bytes], Awaitable[bool]] = publish
    return RetainedHealer("site-1", pub, sink, lookup, delay=0.05, min_interval=0.3), sink


async def test_healer_puts_the_newest_back_once_for_a_burst_and_says_what_it_found() -> None:
    sent: list[tuple[str, bytes]] = []
    healer, sink = _healer({"revocation:org": (4, b"list-4")}, sent)
    async with healer:
        found: list[Found] = ["older", "invalid", "other_issuer", "older"]
        for f in found:
            healer.replaced("revocation", "org", f, 2)
        await asyncio.sleep(0.2)
        assert sent == [("lockgw/v1/org/org/revocations", b"list-4")]
        (ev,) = sink.bodies
        assert isinstance(ev, RepublishedEvent)
        assert (ev.type, ev.list_seq, ev.found, ev.found_seq, ev.arrivals) == (
            "revocation.republished", 4, "older", 2, 4,
        )  # fmt: skip
        # replaced again at once: put right no sooner than min_interval after the last
        healer.replaced("revocation", "org", "cleared")
        await asyncio.sleep(0.1)
        assert len(sent) == 1
        await asyncio.sleep(0.4)
        assert len(sent) == 2 and len(sink.bodies) == 2


async def test_healer_gives_way_when_the_topic_is_current_again_and_has_nothing_to_offer() -> None:
    sent: list[tuple[str, bytes]] = []
    healer, sink = _healer({"roster:org": (3, b"roster-3")}, sent)
    async with healer:
        healer.replaced("roster", "org", "older", 1)
        healer.current("roster", "org")  # another gateway was first
        healer.replaced("revocation", "org", "older", 1)  # nothing held: nothing to put back
        healer.replaced("roster", "other", "cleared")
        healer.replaced("roster", "org", "older", 3)  # not older than what is held
        await asyncio.sleep(0.2)
        assert sent == [] and sink.bodies == []


async def test_healer_not_connected_sends_nothing_and_journals_nothing() -> None:
    sent: list[tuple[str, bytes]] = []
    healer, sink = _healer({"revocation:org": (4, b"list-4")}, sent, connected=False)
    async with healer:
        healer.replaced("revocation", "org", "older", 1)
        await asyncio.sleep(0.2)
        assert len(sent) == 1 and sink.bodies == []
        # the broker delivers the old list again on the next connect: tried again
        healer.replaced("revocation", "org", "older", 1)
        await asyncio.sleep(0.2)
        assert len(sent) == 2
