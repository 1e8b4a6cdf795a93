"""Floods on the MQTT inbound side (issue 17, item 4), with a real mosquitto.

Garbage never takes a signed command's place: commands are verified on arrival and
only verified ones are queued; a verified one that finds the queue full is journaled
(``command.result`` ``rate_limited``); refusals beyond a budget are journaled as one
row per reason per interval with a count. Inbound messages are bounded in size: the
gateway announces an MQTT 5 Maximum Packet Size and checks each kind's limit again
before decoding. (The memory a 250 MB message costs is measured in
bench/mqtt_flood.py, not here.)
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from gateway.config import MqttConfig
from gateway.door import REFUSALS_PER_INTERVAL
from gateway.journal import Journal, journal_path
from gateway.mqtt import MqttLink, Topics
from protocols.control import MAX_COMMAND, Command
from simulators.broker import MosquittoBroker
from simulators.site import Carer
from tests.test_door_process import command_result, home, lock_state, west, windows_now

SITE = "site-mq"


def cfg(url: str, **kw: Any) -> MqttConfig:
    return MqttConfig(url=url, reconnect_min=0.05, reconnect_max=0.5, **kw)


class Seen:
    """Set by the callbacks; ``until(pred)`` waits (10 s at most) until ``pred()`` holds."""

    def __init__(self) -> None:
        self.changed = asyncio.Event()

    async def until(self, pred: Any) -> None:
        async with asyncio.timeout(10):
            while not pred():
                self.changed.clear()
                await self.changed.wait()


async def test_a_verified_command_that_finds_the_queue_full_is_handed_over_not_lost(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    """Garbage is refused by the screen and never queued; with a queue of one, held by a
    command being carried out, the verified commands behind it go to ``on_dropped``."""
    release = asyncio.Event()
    ran: list[str] = []
    dropped: list[tuple[str, tuple[Any, ...]]] = []
    refused: list[bytes] = []
    seen = Seen()

    def drop(kind: str, args: tuple[Any, ...]) -> None:
        dropped.append((kind, args))
        seen.changed.set()

    def screen(raw: bytes) -> tuple[Any, ...] | None:
        seen.changed.set()
        if not raw.startswith(b"signed:"):
            refused.append(raw)
            return None
        return (raw.decode(),)

    async def run(cmd: str) -> None:
        ran.append(cmd)
        seen.changed.set()
        await release.wait()

    async with (
        Journal(journal_path(tmp_path), SITE, retention_days=30) as j,
        MqttLink(
            cfg(broker.url),
            SITE,
            j,
            version="t",
            on_command=run,
            screen_command=screen,
            on_dropped=drop,
            inbound_queue=1,
        ) as link,
    ):
        await link.wait_connected(10)
        async with aiomqtt.Client(broker.host, broker.port) as c:
            await c.publish(Topics.commands(SITE), b"signed:1", qos=1)
            for i in range(500):
                await c.publish(Topics.commands(SITE), b"garbage %d" % i, qos=1)
            await c.publish(Topics.commands(SITE), b"signed:2", qos=1)  # queued (1 deep)
            await c.publish(Topics.commands(SITE), b"signed:3", qos=1)  # queue full
        await seen.until(lambda: len(refused) == 500 and dropped)
        assert ran == ["signed:1"]
        assert dropped == [("command", ("signed:3",))]
        release.set()
        await seen.until(lambda: ran == ["signed:1", "signed:2"])


async def test_a_screen_that_fails_refuses_that_message_and_the_link_goes_on(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    """The screen runs inside paho's message callback: an exception there would break
    the connection. A message whose screen raises is refused like garbage (logged), the
    link stays connected and the next command is carried out."""
    ran: list[str] = []
    seen = Seen()

    def screen(raw: bytes) -> tuple[Any, ...] | None:
        seen.changed.set()
        if raw == b"boom":
            raise RuntimeError("a bug in the screen")
        return (raw.decode(),)

    async def run(cmd: str) -> None:
        ran.append(cmd)
        seen.changed.set()

    async with (
        Journal(journal_path(tmp_path), SITE, retention_days=30) as j,
        MqttLink(
            cfg(broker.url), SITE, j, version="t", on_command=run, screen_command=screen
        ) as link,
    ):
        await link.wait_connected(10)
        connects = link.connects
        async with aiomqtt.Client(broker.host, broker.port) as c:
            await c.publish(Topics.commands(SITE), b"boom", qos=1)
            await c.publish(Topics.commands(SITE), b"signed:after", qos=1)
        await seen.until(lambda: ran == ["signed:after"])
        assert link.connected and link.connects == connects  # never dropped the link


async def test_an_oversize_message_is_dropped_before_it_is_decoded(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    """Over MQTT 3.1.1 nothing bounds what the broker delivers: a command larger than
    any command can be is dropped undecoded (counted), and the next one gets through."""
    got: list[bytes] = []
    seen = Seen()

    async def on_command(raw: bytes) -> None:
        got.append(raw)
        seen.changed.set()

    async with (
        Journal(journal_path(tmp_path), SITE, retention_days=30) as j,
        MqttLink(
            cfg(broker.url, protocol="3.1.1"), SITE, j, version="t", on_command=on_command
        ) as link,
    ):
        await link.wait_connected(10)
        async with aiomqtt.Client(broker.host, broker.port) as c:
            await c.publish(Topics.commands(SITE), b"\xd2" * (MAX_COMMAND + 1), qos=1)
            await c.publish(Topics.commands(SITE), b"\xd2small", qos=1)
        await seen.until(lambda: got)
        assert got == [b"\xd2small"]
        assert link.oversize == {"command": 1}


GARBAGE = 6000


@pytest.mark.slow
async def test_six_thousand_garbage_commands_do_not_push_out_a_signed_alarm(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """6,000 garbage messages on the commands topic, then a valid signed alarm command:
    the alarm is raised and its ``command.result`` journaled; the garbage is journaled
    as refusals — one row each for the first 100 of an interval, then one row per reason
    with a count — and the counts add up to 6,000."""
    inside, _ = windows_now()
    org = west()
    interval = 10
    async with home(
        tmp_path, broker, [org], phone_link=f"flood_interval = {interval}"
    ) as (sim, platform):
        after = platform.checker.last_seq
        t0 = asyncio.get_running_loop().time()
        async with aiomqtt.Client(broker.host, broker.port) as c:
            for i in range(GARBAGE // 100):
                await asyncio.gather(
                    *(
                        c.publish(f"{platform.root}/commands", os.urandom(20 + j) + b"%d" % i, qos=1)
                        for j in range(100)
                    )
                )
        raised = await command_result(platform, sim.command("alarm", state="raised"))
        assert raised["ok"] and raised["cmd"] == "alarm", raised
        await platform.wait_for(lambda e: e["type"] == "alarm.raised", after_seq=after)

        def refusals() -> list[dict[str, Any]]:
            return [
                e
                for e in platform.checker.events
                if e["seq"] > after and e["type"] == "command.result" and not e["ok"]
            ]

        for _ in range(400):  # until the interval's row with the count is in
            if sum(e["count"] or 1 for e in refusals()) >= GARBAGE:
                break
            await asyncio.sleep(0.1)
        elapsed = asyncio.get_running_loop().time() - t0
        rows = refusals()
        assert sum(e["count"] or 1 for e in rows) == GARBAGE
        assert all(e["reason"] == "malformed" for e in rows), {e["reason"] for e in rows}
        # not one per message: at most 100 single rows and one counted row per interval
        assert len(rows) <= (REFUSALS_PER_INTERVAL + 1) * (elapsed / interval + 2), len(rows)
        # a carer still gets in, and the lock answers the alarm centre too
        anna = Carer("Anna", "anna", org, "verzorgende")
        sim.issue(anna, windows=inside)
        res = await sim.attempt(anna)
        assert res.granted, res


@pytest.mark.slow
async def test_a_250_mb_command_is_refused_and_the_gateway_still_works(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """The gateway announces a Maximum Packet Size on connect, so the broker does not
    deliver a 250 MB message to it; the gateway keeps working: a signed unlock right
    after it is carried out and answered."""
    org = west()
    async with home(tmp_path, broker, [org]) as (sim, platform):
        after = platform.checker.last_seq
        async with aiomqtt.Client(broker.host, broker.port) as c:
            big = b"\xd2" * (250 * 1024 * 1024)
            await c.publish(f"{platform.root}/commands", big, qos=1, timeout=300)
        raw = sim.command("unlock")
        done = await command_result(platform, raw)
        assert (done["ok"], done["reason"]) == (True, "ok"), done
        assert await lock_state(sim) == "unlocked"
        # nothing of the big one reached the access decision: no refusal for it
        rid = Command.decode(raw).request_id
        others = [
            e for e in platform.checker.events
            if e["seq"] > after and e["type"] == "command.result" and e["request_id"] != rid
        ]  # fmt: skip
        assert others == []
        assert "mqtt.inbound_oversize" not in (sim.dir / "gateway.log").read_text()
        assert sim.procs["gateway"].returncode is None
