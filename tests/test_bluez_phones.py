"""Phones over the real Bluetooth path, end to end, over BlueZ's D-Bus API (BlueZoo).

``lockgw run`` (its own process, ``[phone_link] ble = true`` on ``[bluetooth] adapter =
"hci0"``) serves phones as a BlueZ GATT peripheral and supervises a simulated carelock
lock (hci1) and key safe (hci2), BlueZ peripherals themselves. Each phone is ``lockgw-sim
phone unlock --bluez --adapter hciN`` (bleak's BlueZ backend), a process of its own on
its own adapter (hci3-hci6). Checked:

- a phone opens the lock and the key safe; each attempt is journaled and published with
  the event id the phone heard; ``lockgw health`` says the BLE phone link is up — and
  down while its adapter is pulled out, up again (and serving) when it is back;
- three phones at once each get their own challenge and result;
- a phone that walks away after its challenge leaves nothing behind (no grant, no
  event) and can start again; one that walks away after its proof still has the door
  opened and the attempt journaled, as :mod:`gateway.door` promises;
- without BlueZ or without the adapter, ``check-config`` says so in one line and ``run``
  stops with one line and exit status 69.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from bluez_env import BluezEnv

from simulators.broker import MosquittoBroker
from simulators.platform import Platform
from simulators.site import Carer, DeviceSpec, Org, SimSite

pytestmark = pytest.mark.slow

SUPERVISION = "reconnect_min = 0.2\nreconnect_max = 1.0\nhealth_interval = 30\ncommand_timeout = 4\n"
PHONES = ("hci3", "hci4", "hci5", "hci6")


@pytest.fixture(scope="module")
def bluez7() -> Iterator[BluezEnv]:
    """The gateway, two devices and four phones, each on an adapter of its own."""
    with BluezEnv(adapters=7) as env:
        yield env


@contextlib.asynccontextmanager
async def ble_home(
    tmp_path: Path, broker: MosquittoBroker, bluez: BluezEnv
) -> AsyncIterator[tuple[SimSite, Platform, Org]]:
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
        await sim.start_devices()
        sim.write_config(broker.url, phone_link="ble = true\ndevice_timeout = 5")
        await sim.pair_all()
        async with Platform(broker.url, sim.site) as platform:
            await sim.start_gateway()
            for device in ("front-lock", "front-keysafe"):
                await platform.wait_for(
                    lambda e, d=device: e["type"] == "device.online" and e.get("device") == d,
                    timeout=30,
                )
            try:
                yield sim, platform, org
            except BaseException:
                log = sim.dir / "gateway.log"
                if log.exists():
                    print("--- gateway.log", *log.read_text(errors="replace").splitlines()[-60:],
                          sep="\n")
                zoo = [ln for ln in bluez.log().splitlines() if "Scanning for" not in ln]
                print("--- bluezoo", *zoo[-40:], sep="\n")
                raise


def carer(sim: SimSite, org: Org, sub: str) -> Carer:
    c = Carer(sub.title(), sub, org, "verzorgende")
    sim.issue(c)
    return c


async def health(sim: SimSite) -> tuple[int, dict[str, Any], str]:
    code, out = await sim.cli("health", "--config", str(sim.config), "--json")
    _, text = await sim.cli("health", "--config", str(sim.config), "--lang", "en")
    return code, json.loads(out.strip().splitlines()[-1]), text


async def wait_ble_up(sim: SimSite, up: bool, timeout: float = 30) -> str:
    async with asyncio.timeout(timeout):
        while True:
            _, report, text = await health(sim)
            ble = (report["snapshot"] or {}).get("phone_ble")
            if ble is not None and ble["up"] is up:
                return text
            await asyncio.sleep(1)


async def test_a_phone_over_bluez_opens_the_lock_and_the_key_safe_through_lockgw_run(
    tmp_path: Path, broker: MosquittoBroker, bluez7: BluezEnv
) -> None:
    async with ble_home(tmp_path, broker, bluez7) as (sim, platform, org):
        sanne = carer(sim, org, "sanne")
        result = await sim.attempt_ble(sanne, "hci3")
        assert result is not None and (result.granted, result.reason) == (True, "ok"), result
        ev = await platform.wait_for(lambda e: e.get("id") == result.event)
        assert (ev["type"], ev["device"], ev["channel"], ev["sub"]) == (
            "access.granted", "front-lock", "phone", "sanne"
        ), ev
        assert (await sim.switch("front-lock", "state"))["lock"] == "unlocked"

        result = await sim.attempt_ble(sanne, "hci3", "open")
        assert result is not None and result.granted, result
        ev = await platform.wait_for(lambda e: e.get("id") == result.event)
        assert (ev["type"], ev["device"]) == ("access.granted", "front-keysafe"), ev
        assert (await sim.switch("front-keysafe", "state"))["compartment"] == "open"

        text = await wait_ble_up(sim, True)
        assert "BLE phone link: up on hci0" in text, text

        # the gateway's adapter pulled out: health says the phone link is down ...
        await bluez7.remove_adapter("hci0")
        text = await wait_ble_up(sim, False)
        assert "phone link: BLE on hci0 is down (adapter hci0 is gone" in text, text
        # ... and plugged in again: advertising again, and a phone is served once the
        # lock is back too (the drivers share hci0: pulling it dropped their links, and
        # until the lock's supervisor has reconnected, a phone rightly hears
        # device_unavailable)
        mark = platform.checker.last_seq
        await bluez7.add_adapter("hci0")
        await wait_ble_up(sim, True)
        await platform.wait_for(
            lambda e: e["type"] == "device.online" and e.get("device") == "front-lock",
            after_seq=mark,
            timeout=60,
        )
        result = await sim.attempt_ble(sanne, "hci3")
        assert result is not None and result.granted, result
        assert not platform.checker.gaps()


async def test_phones_at_once_and_phones_that_walk_away(
    tmp_path: Path, broker: MosquittoBroker, bluez7: BluezEnv
) -> None:
    async with ble_home(tmp_path, broker, bluez7) as (sim, platform, org):
        carers = [carer(sim, org, name) for name in ("anna", "bram", "cor")]
        seq = platform.checker.last_seq
        results = await asyncio.gather(
            *(sim.attempt_ble(c, adapter) for c, adapter in zip(carers, PHONES, strict=False))
        )
        assert all(r is not None and r.granted for r in results), results
        events = [await platform.wait_for(lambda e, r=r: e.get("id") == r.event, after_seq=seq)
                  for r in results if r is not None]
        # each phone heard the event of its own attempt
        assert [e["sub"] for e in events] == ["anna", "bram", "cor"]
        assert len({e["id"] for e in events}) == 3

        # a phone that walks away after the challenge: no attempt, nothing journaled
        dirk = carer(sim, org, "dirk")
        seq = platform.checker.last_seq
        assert await sim.attempt_ble(dirk, "hci6", vanish_after="challenge") is None
        # ... and the same phone, back a moment later, is served as any other
        result = await sim.attempt_ble(dirk, "hci6")
        assert result is not None and result.granted, result
        ev = await platform.wait_for(lambda e: e.get("id") == result.event, after_seq=seq)
        access = [e for e in platform.checker.events
                  if e["seq"] > seq and e["type"].startswith("access.")]
        assert [e["id"] for e in access] == [ev["id"]], access

        # one that walks away after its proof: the door still opens, the attempt is
        # journaled; only the phone does not hear it
        seq = platform.checker.last_seq
        assert await sim.attempt_ble(dirk, "hci6", vanish_after="proof") is None
        late = await platform.wait_for(
            lambda e: e["type"] == "access.granted" and e.get("sub") == "dirk", after_seq=seq,
            timeout=20,
        )
        assert late["device"] == "front-lock", late
        assert not platform.checker.gaps()


async def test_without_bluez_or_its_adapter_check_config_and_run_say_so_in_one_line(
    tmp_path: Path, bluez7: BluezEnv
) -> None:
    sim = SimSite(tmp_path / "home", devices=[], bluetooth="hci9",
                  env={"DBUS_SYSTEM_BUS_ADDRESS": bluez7.bus_address})
    async with sim:
        sim.add_org(Org("org-west", "Thuiszorg West", roles=("verzorgende",),
                        purposes=("planned",)))
        sim.write_config("mqtt://127.0.0.1:9", phone_link="ble = true")
        code, out = await sim.cli("check-config", "--config", str(sim.config))
        assert code == 1
        assert (
            "  - bluetooth.adapter: BlueZ has no adapter hci9 (it has: hci0, hci1, hci2, hci3, "
            "hci4, hci5, hci6); check `bluetoothctl list` and [bluetooth] adapter"
        ) in out.splitlines(), out

        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "run", "--config", str(sim.config),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=sim.dir,
            env=bluez7.env(),
        )
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 69
        assert err.decode().strip().splitlines() == [
            "lockgw run: not started: bluetooth.adapter: BlueZ has no adapter hci9 (it has: "
            "hci0, hci1, hci2, hci3, hci4, hci5, hci6); check `bluetoothctl list` and "
            "[bluetooth] adapter"
        ]
        assert not (sim.dir / "data").exists()  # nothing started, nothing journaled

        # no BlueZ at all (no system bus there)
        sim.env = {"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path}/no-bus"}
        code, out = await sim.cli("check-config", "--config", str(sim.config))
        assert code == 1
        assert [ln for ln in out.splitlines() if "bluetooth" in ln] == [
            ln for ln in out.splitlines() if ln.startswith("  - bluetooth: the system D-Bus cannot")
        ] != [], out
