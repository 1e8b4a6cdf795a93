"""Shared fixtures: a real mosquitto on a free loopback port, temp key material."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from simulators.broker import MosquittoBroker


@pytest.fixture
async def broker() -> AsyncIterator[MosquittoBroker]:
    """A fresh mosquitto for one test (stop()/start() it to simulate an outage)."""
    async with MosquittoBroker() as b:
        yield b
