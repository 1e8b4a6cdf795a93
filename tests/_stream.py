"""Test helper: a platform-side subscriber that survives broker restarts (persistent session)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from simulators.platform import StreamChecker


class Collector:
    """Subscribes to ``topic`` with a persistent session, reconnecting until closed."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        self.host, self.port, self.topic = host, port, topic
        self.client_id = f"collector-{uuid.uuid4().hex[:8]}"
        self.checker = StreamChecker()
        self.raw: list[dict[str, Any]] = []  # every delivery, duplicates included
        self.retained: dict[str, bytes] = {}  # the latest payload of every non-event topic
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def __aenter__(self) -> Collector:
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(10):
            await self._subscribed.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        while True:
            try:
                async with aiomqtt.Client(
                    self.host,
                    self.port,
                    identifier=self.client_id,
                    protocol=aiomqtt.ProtocolVersion.V5,
                    clean_start=False,
                    properties=props,
                    max_queued_incoming_messages=0,
                ) as client:
                    client.pending_calls_threshold = 10_000
                    await client.subscribe(self.topic, qos=1)
                    self._subscribed.set()
                    async for msg in client.messages:
                        payload = msg.payload if isinstance(msg.payload, bytes) else b""
                        if not str(msg.topic).endswith("/events"):
                            self.retained[str(msg.topic)] = payload  # latest per topic
                        else:
                            event = json.loads(payload)
                            self.raw.append(event)
                            self.checker.add(event)
                        async with self._changed:
                            self._changed.notify_all()
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)

    async def wait(self, pred: Callable[[], bool], timeout: float = 60) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(pred)

    async def wait_seq(self, seq: int, timeout: float = 60) -> None:
        await self.wait(lambda: self.checker.last_seq >= seq, timeout)

    def assert_complete(self, last_seq: int) -> None:
        """Every seq 1..last_seq exactly once after de-duplication by id, in order."""
        seqs = [e["seq"] for e in self.checker.events]
        assert seqs == list(range(1, last_seq + 1)), self.checker.summary()
        assert self.checker.gaps() == []
        # the first delivery of every seq came in seq order
        first: list[int] = []
        seen: set[int] = set()
        for e in self.raw:
            if e["seq"] not in seen:
                seen.add(e["seq"])
                first.append(e["seq"])
        assert first == sorted(first)
