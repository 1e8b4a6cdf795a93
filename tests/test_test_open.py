"""``lockgw test-open``: the installer's trial opening, against simulated devices as processes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from simulators.broker import MosquittoBroker
from simulators.site import Org, SimSite

pytestmark = pytest.mark.slow


async def test_trial_opening_moves_the_devices_and_is_journaled(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    async with SimSite(tmp_path) as site:
        site.add_org(Org("org-a", "A", ("verzorgende",), ("planned",)))
        site.write_config(broker.url)
        await site.start_devices()
        await site.pair_all()
        code, out = await site.cli(
            "test-open", "--config", str(site.config), "--door", "front", "--hold", "0.2"
        )
        assert code == 0, out
        assert "front-lock: unlock ok" in out and "front-lock: lock ok" in out
        assert "front-keysafe: open ok" in out
        assert "result: ok" in out
        state = json.dumps(await site.switch("front-lock", "state"))
        assert '"locked"' in state, state  # relocked after the trial
        code, out = await site.cli("audit", "show", "--config", str(site.config), "--json")
        assert code == 0, out
        rows = json.loads(out)
        grants = [r for r in rows if r.get("type") == "access.granted"]
        assert {r.get("device") for r in grants} == {"front-lock", "front-keysafe"}
        assert all(r.get("actor") == "installer" for r in grants)


async def test_trial_opening_of_a_door_without_devices_says_which_doors_exist(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    async with SimSite(tmp_path) as site:
        site.write_config(broker.url)
        code, out = await site.cli("test-open", "--config", str(site.config), "--door", "back")
        assert code == 1
        assert "no device at door 'back'" in out and "front" in out


async def test_installer_commands_refuse_while_the_service_runs(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """A BLE device takes one connection and the journal has one writer: pair and
    test-open say to stop the service first, and leave the running gateway alone."""
    async with SimSite(tmp_path) as site:
        site.add_org(Org("org-a", "A", ("verzorgende",), ("planned",)))
        site.write_config(broker.url)
        await site.start_devices()
        await site.pair_all()
        gateway = await site.start_gateway()
        health = site.dir / "data" / "health.json"
        for _ in range(100):  # the daemon writes its snapshot (with its pid) once ready
            if health.exists() and str(gateway.pid) in health.read_text():
                break
            await asyncio.sleep(0.1)
        code, out = await site.cli("pair", "--config", str(site.config), "front-lock", "--yes")
        assert code == 1 and "service is running" in out and "systemctl stop lockgw" in out
        code, out = await site.cli("test-open", "--config", str(site.config), "--door", "front")
        assert code == 1 and "service is running" in out
        assert gateway.returncode is None


async def test_trial_opening_of_a_key_safe_without_the_key_is_not_ok_and_says_why(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """The compartment opens, but the key safe reports the house key absent: the trial
    fails with the reason, the opening itself is journaled as what it was."""
    async with SimSite(tmp_path) as site:
        site.add_org(Org("org-a", "A", ("verzorgende",), ("planned",)))
        site.write_config(broker.url)
        await site.start_devices()
        await site.pair_all()
        for name, value in (("compartment", "open"), ("key", "take"), ("compartment", "close")):
            await site.switch("front-keysafe", name, value)
        code, out = await site.cli(
            "test-open", "--config", str(site.config), "--door", "front", "--hold", "0.2"
        )
        assert code == 1, out
        assert "front-lock: unlock ok" in out
        assert "front-keysafe: open done, NOT OK" in out and "key absent" in out
        assert "result: FAILED" in out and "result: ok" not in out
        code, out = await site.cli("audit", "show", "--config", str(site.config), "--json")
        rows = json.loads(out)
        opened = [r for r in rows if r.get("device") == "front-keysafe"]
        assert [r.get("type") for r in opened] == ["access.granted"]
