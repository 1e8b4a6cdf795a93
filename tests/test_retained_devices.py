"""Retained truth at start-up (issue 18 item 4, issue 20 item 2): every configured device's
state and availability are on the broker from the gateway's first connect, not only after
a change; a device the gateway cannot reach is offline with the reason, its last known
state kept; a problem is retained for as long as it lasts. Real processes throughout."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from simulators.broker import MosquittoBroker
from simulators.platform import Platform
from simulators.site import Carer, DeviceSpec, Org, SimSite

pytestmark = pytest.mark.slow

DEVICES = ("front-lock", "front-keysafe")


async def _forget_retained(broker: MosquittoBroker, site: SimSite) -> None:
    """The broker loses what it kept (a new broker, an operator's clean-up)."""
    async with Platform(broker.url, site.site) as p:
        for dev in DEVICES:
            for leaf in ("state", "availability"):
                await p.send(f"{p.root}/devices/{dev}/{leaf}", b"", retain=True)


async def test_every_device_has_retained_state_and_availability_from_the_first_connect(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    async with SimSite(tmp_path) as site:
        site.add_org(Org("org-a", "A", ("verzorgende",), ("planned",)))
        site.write_config(broker.url)
        await site.start_devices()
        await site.pair_all()
        async with Platform(broker.url, site.site) as platform:
            await site.start_gateway()
            await platform.wait_until(
                lambda: all(
                    platform.availability.get(d, {}).get("state") == "online" for d in DEVICES
                ),
                timeout=20,
            )
            await platform.wait_until(lambda: set(platform.states) >= set(DEVICES))
            assert platform.states["front-lock"]["lock"] == "locked"
            assert platform.states["front-lock"]["problems"] == []
            assert platform.states["front-keysafe"]["key"] == "present"

        # restart with the key safe gone and a broker that kept nothing of the devices
        await site.stop("gateway")
        await site.stop("sim-front-keysafe")
        await _forget_retained(broker, site)
        async with Platform(broker.url, site.site) as platform:
            await asyncio.sleep(0.5)
            assert platform.states == {} and platform.availability == {}
            await site.start_gateway()
            await platform.wait_until(lambda: set(platform.states) >= set(DEVICES), timeout=20)
            # the key safe's last known state (from before the restart), not nothing
            assert platform.states["front-keysafe"]["key"] == "present"
            await platform.wait_until(
                lambda: platform.availability.get("front-lock", {}).get("state") == "online"
                and platform.availability.get("front-keysafe", {}).get("reason") not in (
                    None, "not reached yet since the gateway started"
                ),
                timeout=20,
            )
            keysafe = platform.availability["front-keysafe"]
            assert keysafe["state"] == "offline" and keysafe["reason"], keysafe


async def test_a_device_never_reached_is_retained_unknown_and_offline(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """Configured but never paired and never answering: the broker still holds its
    state (every field unknown) and why it is offline."""
    back = DeviceSpec("back-lock", "back", "lock", "carelock-lock")
    async with SimSite(tmp_path, devices=[back]) as site:
        site.write_config(broker.url)
        async with Platform(broker.url, site.site) as platform:
            await site.start_gateway()
            await platform.wait_until(lambda: "back-lock" in platform.states, timeout=20)
            state = platform.states["back-lock"]
            assert state["kind"] == "lock" and state["lock"] is None
            assert state["door"] == "unknown" and state["problems"] == []
            await platform.wait_until(
                lambda: "not paired" in (platform.availability.get("back-lock", {}).get("reason") or ""),
                timeout=20,
            )
            assert platform.availability["back-lock"]["state"] == "offline"


async def test_a_jam_is_a_retained_problem_until_the_lock_moves_again(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    lock = DeviceSpec("front-lock", "front", "lock", "carelock-lock", extra="health_interval = 0.5")
    async with SimSite(tmp_path, devices=[lock]) as site:
        site.write_config(broker.url)
        await site.start_devices()
        await site.pair_all()
        async with Platform(broker.url, site.site) as platform:
            await site.start_gateway()
            await platform.wait_until(
                lambda: platform.states.get("front-lock", {}).get("lock") == "locked", timeout=20
            )
            await site.switch("front-lock", "jam", "on")
            await platform.send_command(site.command("unlock"))
            await platform.wait_until(
                lambda: platform.states["front-lock"].get("problems") == ["lock_jammed"],
                timeout=20,
            )
            assert platform.states["front-lock"]["lock"] == "jammed"
            await site.switch("front-lock", "jam", "off")
            await platform.send_command(site.command("lock", reason="service"))
            await platform.wait_until(
                lambda: platform.states["front-lock"].get("problems") == []
                and platform.states["front-lock"].get("lock") == "locked",
                timeout=20,
            )


async def test_a_door_left_unlocked_after_a_visit_is_a_retained_problem_until_it_locks(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """A carer opens, goes in, shuts the door and does not lock it: when the visit ends
    ``left_unlocked`` the lock's retained state says so, until the lock is locked."""
    lock = DeviceSpec("front-lock", "front", "lock", "carelock-lock")
    async with SimSite(tmp_path, devices=[lock]) as site:
        org = site.add_org(Org("org-a", "A", ("verzorgende",), ("planned",)))
        anna = Carer("Anna", "c-1", org, "verzorgende")
        site.issue(anna)
        site.write_config(broker.url, extra="[visits]\nrelock_after = 5\n[health]\ninterval = 0.3\n")
        await site.start_devices()
        await site.pair_all()
        async with Platform(broker.url, site.site) as platform:
            await site.start_gateway()
            result = await site.attempt(anna)
            assert result.granted, result
            await site.switch("front-lock", "door", "open")
            await site.switch("front-lock", "door", "close")
            await platform.wait_until(
                lambda: platform.states.get("front-lock", {}).get("problems") == ["left_unlocked"],
                timeout=30,
            )
            ended = await platform.wait_for(lambda e: e["type"] == "visit.ended")
            assert ended["problems"] == ["left_unlocked"]
            # health says it too: a warning, on the stream and in the retained status
            warning = await platform.wait_for(
                lambda e: e["type"] == "health.warning" and e["code"] == "door.left_unlocked"
            )
            assert (warning["level"], warning["subject"]) == ("warning", "front-lock"), warning
            await platform.wait_until(
                lambda: any(r["code"] == "door.left_unlocked"
                            for r in (platform.status or {}).get("reasons", [])),
                timeout=10,
            )  # fmt: skip
            await platform.send_command(site.command("lock", reason="service"))
            await platform.wait_until(
                lambda: platform.states["front-lock"].get("problems") == [], timeout=20
            )
            await platform.wait_for(
                lambda e: e["type"] == "health.cleared" and e["code"] == "door.left_unlocked",
                after_seq=warning["seq"],
            )
