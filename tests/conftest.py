"""Shared fixtures: a real mosquitto on a free loopback port, temp key material."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, settings

from simulators.broker import MosquittoBroker

# CI machines are small and shared: no per-example deadline, no "too slow" health check.
settings.register_profile(
    "lockgw", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=200
)
settings.load_profile("lockgw")


@pytest.fixture
async def broker() -> AsyncIterator[MosquittoBroker]:
    """A fresh mosquitto for one test (stop()/start() it to simulate an outage)."""
    async with MosquittoBroker() as b:
        yield b
