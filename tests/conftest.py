"""Shared fixtures: a real mosquitto on a free loopback port, BlueZ's D-Bus API on a
private bus (BlueZoo, ``tests/bluez_env.py``)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from bluez_env import BluezEnv
from hypothesis import HealthCheck, settings

from simulators.broker import MosquittoBroker

# Subprocesses (lockgw run, the simulators, the CLI) import the code of this checkout, not
# whatever the venv's editable install points at: a second worktree tests its own code.
_ROOT = str(Path(__file__).resolve().parent.parent)
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (_ROOT, os.environ.get("PYTHONPATH", "")) if p
)

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


@pytest.fixture(scope="module")
def bluez() -> Iterator[BluezEnv]:
    """A private system bus with BlueZoo and four virtual adapters (hci0-hci3), shared by
    the tests of one module. Give subprocesses ``env=bluez.env()``; in-process bleak
    needs the ``bluez_here`` fixture as well."""
    with BluezEnv(adapters=4) as env:
        yield env


@pytest.fixture
def bluez_here(bluez: BluezEnv, monkeypatch: pytest.MonkeyPatch) -> BluezEnv:
    """``bluez``, with this process's ``DBUS_SYSTEM_BUS_ADDRESS`` pointing at it."""
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bluez.bus_address)
    return bluez
