"""The MQTT link against a real mosquitto: status, retained state, the event stream, inbound."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from _stream import Collector

from gateway.config import MqttConfig
from gateway.journal import Journal, journal_path
from gateway.mqtt import MqttLink, Topics
from protocols.events import BatteryEvent
from simulators.broker import MosquittoBroker, free_port

SITE = "site-mq"


def cfg(url: str, **kw: Any) -> MqttConfig:
    return MqttConfig(url=url, reconnect_min=0.05, reconnect_max=0.5, **kw)


def battery(level: int = 50) -> BatteryEvent:
    return BatteryEvent(device="front-lock", door="front", level=level, low=False, critical=False)


async def publish(
    broker: MosquittoBroker, topic: str, payload: bytes, *, retain: bool = False
) -> None:
    async with aiomqtt.Client(broker.host, broker.port) as c:
        await c.publish(topic, payload, qos=1, retain=retain)


async def test_events_stream_in_order_and_leave_the_outbox_on_puback(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    async with (
        Collector(broker.host, broker.port, Topics.events(SITE)) as sub,
        Journal(journal_path(tmp_path), SITE, retention_days=30) as j,
    ):
        for i in range(30):  # journaled before the link exists: sent when it connects
            await j.emit(battery(i))
        async with MqttLink(cfg(broker.url), SITE, j, version="test") as link:
            await link.wait_connected(10)
            await asyncio.gather(*(j.emit(battery(i % 100)) for i in range(500)))
            await sub.wait_seq(530)
            async with asyncio.timeout(10):
                await j.wait_drained()
            assert j.backlog() == 0 and await j.unpublished(10) == []
    sub.assert_complete(530)
    assert sub.raw[0]["site"] == SITE and sub.raw[0]["type"] == "battery"


async def test_status_is_online_then_offline_on_an_orderly_stop(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    async with Journal(journal_path(tmp_path), SITE, retention_days=30) as j:
        async with (
            MqttLink(cfg(broker.url), SITE, j, version="9.9") as link,
            Collector(broker.host, broker.port, Topics.status(SITE)) as sub,
        ):
            await link.wait_connected(10)
            await sub.wait(lambda: Topics.status(SITE) in sub.retained, 10)
            online = json.loads(sub.retained[Topics.status(SITE)])
            assert online["state"] == "online" and online["version"] == "9.9"
            assert online["started_at"].endswith("Z")
        async with Collector(broker.host, broker.port, Topics.status(SITE)) as later:
            await later.wait(lambda: Topics.status(SITE) in later.retained, 10)
            assert json.loads(later.retained[Topics.status(SITE)])["state"] == "offline"


async def test_device_state_and_inventory_are_retained_and_resent_after_an_outage(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    state_topic = Topics.device_state(SITE, "front-lock")
    async with (
        Journal(journal_path(tmp_path), SITE, retention_days=30) as j,
        MqttLink(cfg(broker.url), SITE, j, version="t") as link,
    ):
        await link.publish_device_state("front-lock", {"lock": "locked", "battery": 80})
        await link.wait_connected(10)
        await link.publish_inventory([{"id": "front-lock", "driver": "carelock-lock"}])
        await broker.stop()
        # a new state while the broker is down: kept, and sent once it is back
        await link.publish_device_state("front-lock", {"lock": "unlocked", "battery": 79})
        await broker.start()
        await link.wait_connected(10)
        async with Collector(broker.host, broker.port, f"{Topics.site(SITE)}/#") as sub:
            await sub.wait(
                lambda: state_topic in sub.retained and Topics.inventory(SITE) in sub.retained, 10
            )
            assert json.loads(sub.retained[state_topic]) == {"lock": "unlocked", "battery": 79}
            assert json.loads(sub.retained[Topics.inventory(SITE)])[0]["id"] == "front-lock"


@pytest.mark.slow
async def test_broker_outage_during_thousands_of_events_loses_nothing_and_keeps_order(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    async with (
        Collector(broker.host, broker.port, Topics.events(SITE)) as sub,
        Journal(journal_path(tmp_path), SITE, retention_days=30) as j,
        MqttLink(cfg(broker.url), SITE, j, version="t") as link,
    ):
        await link.wait_connected(10)
        for i in range(500):
            await j.emit(battery(i % 100))
        await sub.wait_seq(300)
        await broker.stop()
        await asyncio.gather(*(j.emit(battery(i % 100)) for i in range(3000)))
        assert j.backlog() >= 3000
        await broker.start()
        await sub.wait_seq(3500, timeout=90)
        async with asyncio.timeout(30):
            await j.wait_drained()
    sub.assert_complete(3500)


async def test_inbound_messages_reach_the_callbacks_raw_and_a_failing_callback_is_survived(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    got: dict[str, list[Any]] = {"command": [], "revocation": [], "credential": []}
    arrived = asyncio.Event()

    async def on_command(raw: bytes) -> None:
        got["command"].append(raw)
        arrived.set()
        if raw == b"\x00boom":
            raise RuntimeError("the access controller failed")

    async def on_revocation(issuer: str, raw: bytes) -> None:
        got["revocation"].append((issuer, raw))
        arrived.set()

    async def on_credential(raw: bytes) -> None:
        got["credential"].append(raw)
        arrived.set()

    # a revocation list retained before the gateway connects, per issuer
    await publish(broker, Topics.revocations("org-a"), b"\xd2\x84rev-a", retain=True)
    await publish(broker, Topics.revocations("org-b"), b"\xd2\x84rev-b", retain=True)

    async def until(pred: Any) -> None:
        async with asyncio.timeout(10):
            while not pred():
                arrived.clear()
                await arrived.wait()

    async with (
        Journal(journal_path(tmp_path), SITE, retention_days=30) as j,
        MqttLink(
            cfg(broker.url),
            SITE,
            j,
            version="t",
            on_command=on_command,
            on_revocation=on_revocation,
            on_credential=on_credential,
        ) as link,
    ):
        await link.wait_connected(10)
        await until(lambda: len(got["revocation"]) == 2)
        assert sorted(got["revocation"]) == [
            ("org-a", b"\xd2\x84rev-a"),
            ("org-b", b"\xd2\x84rev-b"),
        ]
        await publish(broker, Topics.commands(SITE), b"\x00boom")
        await publish(broker, Topics.commands(SITE), b"\xd2\x84cmd")
        await publish(broker, Topics.credentials(SITE), b"\xd8\x3dtoken")
        await publish(broker, Topics.commands("another-site"), b"not for us")
        await until(lambda: len(got["command"]) == 2 and len(got["credential"]) == 1)
        assert got["command"] == [b"\x00boom", b"\xd2\x84cmd"]
        assert got["credential"] == [b"\xd8\x3dtoken"]
        assert link.connected
        env = await j.emit(battery())  # and the stream still flows
        async with asyncio.timeout(10):
            await j.wait_drained()
        assert env.seq == 1


async def test_mqtt_311_is_spoken_when_configured(broker: MosquittoBroker, tmp_path: Path) -> None:
    async with (
        Collector(broker.host, broker.port, Topics.events(SITE)) as sub,
        Journal(journal_path(tmp_path), SITE, retention_days=30) as j,
        MqttLink(cfg(broker.url, protocol="3.1.1"), SITE, j, version="t") as link,
    ):
        await link.wait_connected(10)
        for _ in range(20):
            await j.emit(battery())
        await sub.wait_seq(20)
    sub.assert_complete(20)


async def _v311_only_proxy(target: tuple[str, int], seen: list[int]) -> tuple[asyncio.Server, int]:
    """A broker front that refuses MQTT 5 like a 3.1.1-only broker, and relays 3.1.1."""

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            head = await r.read(1)
            mult, length = 1, 0
            lenbytes = b""
            while True:
                b = await r.readexactly(1)
                lenbytes += b
                length += (b[0] & 0x7F) * mult
                mult *= 128
                if not b[0] & 0x80:
                    break
            body = await r.readexactly(length)
            level = body[6]  # after the 2-byte length and "MQTT"
            seen.append(level)
            if level == 5:
                w.write(b"\x20\x02\x00\x01")  # 3.1.1 CONNACK: unacceptable protocol version
                await w.drain()
                return
            ur, uw = await asyncio.open_connection(*target)
            uw.write(head + lenbytes + body)

            async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                with contextlib.suppress(OSError):
                    while data := await src.read(65536):
                        dst.write(data)
                        await dst.drain()
                dst.close()

            await asyncio.gather(pipe(r, uw), pipe(ur, w))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            w.close()

    port = free_port()
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    return server, port


async def test_a_broker_refusing_mqtt5_gets_mqtt_311(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    seen: list[int] = []
    server, port = await _v311_only_proxy((broker.host, broker.port), seen)
    async with (
        server,
        Collector(broker.host, broker.port, Topics.events(SITE)) as sub,
        Journal(journal_path(tmp_path), SITE, retention_days=30) as j,
        MqttLink(cfg(f"mqtt://127.0.0.1:{port}"), SITE, j, version="t") as link,
    ):
        await link.wait_connected(10)
        await j.emit(battery())
        await sub.wait_seq(1)
        assert seen[:2] == [5, 4]  # tried MQTT 5, then spoke 3.1.1
        server.close()


async def test_the_event_window_stays_below_the_brokers_receive_maximum(tmp_path: Path) -> None:
    async with (
        MosquittoBroker(max_inflight=20) as small,
        Collector(small.host, small.port, Topics.events(SITE)) as sub,
        Journal(journal_path(tmp_path), SITE, retention_days=30) as j,
        MqttLink(cfg(small.url), SITE, j, version="t") as link,
    ):
        await link.wait_connected(10)
        assert link.window_in_use == 10  # Receive Maximum 20, less headroom for state
        await asyncio.gather(*(j.emit(battery(i % 100)) for i in range(300)))
        await sub.wait_seq(300)
    sub.assert_complete(300)


async def test_an_orderly_stop_sends_what_was_journaled_just_before_it(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    """The gateway journals gateway.stopping and closes the link at once: the stream
    still carries it (the feeder used to leave on the stop signal with it unsent, and
    the platform heard it only after the next start — seen as a flaky demo)."""
    async with (
        Collector(broker.host, broker.port, Topics.events(SITE)) as sub,
        Journal(journal_path(tmp_path), SITE, retention_days=30) as j,
    ):
        for round_ in range(5):
            async with MqttLink(cfg(broker.url), SITE, j, version="t") as link:
                await link.wait_connected(10)
                await j.emit(battery(round_))  # and leave at once, as Gateway._stop does
            await sub.wait_seq(round_ + 1, timeout=10)
            assert j.backlog() == 0
    sub.assert_complete(5)
