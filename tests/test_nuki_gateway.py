"""A Nuki lock at a door, configured, paired and opened exactly like a carelock one —
connected on demand (its driver's default) and woken by its beacon."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulators.broker import MosquittoBroker
from simulators.platform import Platform
from simulators.site import Carer, DeviceSpec, Org, SimSite

pytestmark = pytest.mark.slow


async def test_the_gateway_pairs_supervises_and_opens_a_nuki_lock(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    nuki = DeviceSpec("front-nuki", "front", "nuki", "nuki")
    async with SimSite(tmp_path, devices=[nuki]) as site:
        org = site.add_org(Org("org-a", "A", ("verzorgende",), ("planned",)))
        anna = Carer("Anna", "c-1", org, "verzorgende")
        site.issue(anna)
        site.write_config(broker.url)
        await site.start_devices()
        code, out = await site.cli("pair", "--config", str(site.config), "front-nuki", "--yes")
        assert code == 0, out
        # the installer is told before pairing that the gateway takes the bridge slot
        assert "bridge slot" in out and "pushed out" in out, out
        code, out = await site.cli("devices", "--config", str(site.config), "--json")
        assert code == 0, out
        assert "nuki" in out
        async with Platform(broker.url, site.site) as platform:
            await site.start_gateway()
            result = await site.attempt(anna)
            assert result.granted, result
            granted = await platform.wait_for(lambda e: e.get("id") == result.event, timeout=20)
            assert granted["type"] == "access.granted" and granted["device"] == "front-nuki"
            # the supervisor follows the lock: the inventory names it, its state is retained
            await platform.wait_for(
                lambda e: e["type"] == "lock.state" and e.get("device") == "front-nuki",
                timeout=20,
            )
            # on demand by default: woken by the lock's beacon, not by a poll (every 30 min)
            seq = platform.checker.last_seq
            await site.switch("front-nuki", "door", "open")
            opened = await platform.wait_for(
                lambda e: e["type"] == "lock.state" and e.get("door_state") == "open",
                after_seq=seq,
                timeout=20,
            )
            assert opened["device"] == "front-nuki", opened
            await site.switch("front-nuki", "door", "closed")
            await site.switch("front-nuki", "jam", True)
            jammed = await site.attempt(anna)
            assert jammed.reason == "device_failed", jammed
        assert json.loads(out)
