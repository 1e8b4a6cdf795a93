"""The device side of the real Bluetooth path, end to end, over BlueZ's D-Bus API (BlueZoo).

``lockgw run`` (its own process, ``[bluetooth] adapter = "hci0"``) supervises a simulated
carelock lock and key safe that are BlueZ peripherals on hci1 / hci2 (``lockgw-sim …
--bluez``), paired by ``lockgw pair``; mosquitto carries the stream and the alarm centre's
signed commands; a phone comes in over the loopback phone link. Checked:

- a signed remote unlock (MQTT → decision → carelock driver → BlueZ → the lock) and a
  phone's unlock and key-safe opening, each journaled and published;
- a lock that drops its link in the middle of a command: what the caller hears
  (``device_unavailable``), what the platform hears (``device.offline``), and that the
  supervisor reconnects (``device.online``) and the next command works;
- the gateway's adapter taken away and given back while it runs: the devices go offline,
  come back online by themselves, and open again.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from bluez_env import BluezEnv

from protocols.control import Command
from simulators.broker import MosquittoBroker
from simulators.platform import Platform
from simulators.site import Carer, DeviceSpec, Org, SimSite

pytestmark = pytest.mark.slow

Event = dict[str, Any]
SUPERVISION = (
    "reconnect_min = 0.2\nreconnect_max = 1.0\nhealth_interval = 30\ncommand_timeout = 4\n"
)


@contextlib.asynccontextmanager
async def bluez_home(
    tmp_path: Path, broker: MosquittoBroker, bluez: BluezEnv
) -> AsyncIterator[tuple[SimSite, Platform, Carer]]:
    sim = SimSite(
        tmp_path / "home",
        devices=[
            DeviceSpec("front-lock", "front", "lock", "carelock-lock", extra=SUPERVISION,
                       adapter="hci1"),
            DeviceSpec("front-keysafe", "front", "keysafe", "carelock-keysafe",
                       extra=SUPERVISION, adapter="hci2"),
        ],
        bluetooth="hci0",
        env={"DBUS_SYSTEM_BUS_ADDRESS": bluez.bus_address},
    )
    async with sim:
        org = sim.add_org(Org("org-west", "Thuiszorg West", roles=("verzorgende",),
                              purposes=("planned", "emergency")))
        carer = Carer("Sanne", "sanne", org, "verzorgende")
        await sim.start_devices()
        assert {d.address for d in sim.devices} == {
            bluez.adapter("hci1").address, bluez.adapter("hci2").address
        }
        sim.write_config(broker.url, phone_link="device_timeout = 5")
        await sim.pair_all()
        sim.issue(carer)
        async with Platform(broker.url, sim.site) as platform:
            await sim.start_gateway()
            for device in ("front-lock", "front-keysafe"):
                await platform.wait_for(
                    lambda e, d=device: e["type"] == "device.online" and e.get("device") == d,
                    timeout=30,
                )
            try:
                yield sim, platform, carer
            except BaseException:
                for name in ("gateway", "sim-front-lock"):
                    log = sim.dir / f"{name}.log"
                    if log.exists():
                        print(f"--- {name}.log", *log.read_text(errors="replace").splitlines()[-40:],
                              sep="\n")
                raise


async def command_result(platform: Platform, raw: bytes, after_seq: int = 0) -> Event:
    rid = Command.decode(raw).request_id
    await platform.send_command(raw)
    return await platform.wait_for(
        lambda e: e["type"] == "command.result" and e.get("request_id") == rid,
        timeout=20,
        after_seq=after_seq,
    )


async def lock_state(sim: SimSite) -> str:
    return str((await sim.switch("front-lock", "state"))["lock"])


async def test_gateway_operates_bluez_devices_by_signed_command_and_by_phone(
    tmp_path: Path, broker: MosquittoBroker, bluez: BluezEnv
) -> None:
    async with bluez_home(tmp_path, broker, bluez) as (sim, platform, carer):
        # the alarm centre opens remotely: a signed command over MQTT, through BlueZ
        raw = sim.command("unlock")
        done = await command_result(platform, raw)
        assert (done["ok"], done["reason"]) == (True, "ok"), done
        access = await platform.wait_for(
            lambda e: e["type"] == "access.granted"
            and e.get("request_id") == Command.decode(raw).request_id
        )
        assert access["device"] == "front-lock" and access["channel"] == "command", access
        assert await lock_state(sim) == "unlocked"
        await platform.wait_for(
            lambda e: e["type"] == "lock.state" and e.get("lock") == "unlocked", timeout=10
        )
        locked = await command_result(platform, sim.command("lock"))
        assert locked["ok"], locked
        assert await lock_state(sim) == "locked"

        # a carer's phone: unlock the lock, then open the key safe
        result = await sim.attempt(carer)
        assert (result.granted, result.reason) == (True, "ok"), result
        assert await lock_state(sim) == "unlocked"
        result = await sim.attempt(carer, "open")
        assert (result.granted, result.reason) == (True, "ok"), result
        safe = await sim.switch("front-keysafe", "state")
        assert safe["compartment"] == "open", safe
        ev = await platform.wait_for(lambda e: e.get("id") == result.event)
        assert ev["type"] == "access.granted" and ev["device"] == "front-keysafe", ev
        assert not platform.checker.gaps()


async def test_a_lock_that_drops_its_link_mid_command_and_an_adapter_pulled_and_replugged(
    tmp_path: Path, broker: MosquittoBroker, bluez: BluezEnv
) -> None:
    async with bluez_home(tmp_path, broker, bluez) as (sim, platform, carer):
        # the lock is slow to answer, and drops the link while the unlock is under way
        await sim.switch("front-lock", "slow", "1500")
        seq = platform.checker.last_seq
        attempt = sim.attempt(carer)
        import asyncio

        task = asyncio.create_task(attempt)
        await asyncio.sleep(0.7)
        await sim.switch("front-lock", "drop")
        result = await task
        assert (result.granted, result.reason) == (False, "device_unavailable"), result
        denied = await platform.wait_for(lambda e: e.get("id") == result.event)
        assert denied["type"] == "access.denied" and denied["device"] == "front-lock", denied
        offline = await platform.wait_for(
            lambda e: e["type"] == "device.offline" and e.get("device") == "front-lock",
            after_seq=seq,
        )
        await platform.wait_for(
            lambda e: e["type"] == "device.online" and e.get("device") == "front-lock",
            after_seq=offline["seq"],
            timeout=30,
        )
        await sim.switch("front-lock", "slow", "0")
        result = await sim.attempt(carer)
        assert (result.granted, result.reason) == (True, "ok"), result

        # the gateway's Bluetooth adapter is pulled out, then plugged in again
        seq = platform.checker.last_seq
        await bluez.remove_adapter("hci0")
        for device in ("front-lock", "front-keysafe"):
            await platform.wait_for(
                lambda e, d=device: e["type"] == "device.offline" and e.get("device") == d,
                after_seq=seq,
                timeout=20,
            )
        back = platform.checker.last_seq
        await bluez.add_adapter("hci0")
        for device in ("front-lock", "front-keysafe"):
            await platform.wait_for(
                lambda e, d=device: e["type"] == "device.online" and e.get("device") == d,
                after_seq=back,
                timeout=30,
            )
        done = await command_result(platform, sim.command("lock"))
        assert done["ok"], done
        assert await lock_state(sim) == "locked"
        assert not platform.checker.gaps()
