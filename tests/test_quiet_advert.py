"""What a stranger at the door sees and hears over BLE (issue 17 items 2 and 6).

- **The advertisement** (``protocols/advert.py``): the hub hands BlueZ an advertisement
  with no name, no manufacturer or service data and one service UUID that looks random
  and changes every epoch; a phone holding the site's advertising key recognises it, a
  phone with another site's key or none does not. Its GATT service and characteristics
  have the site's own UUIDs: a stranger who connects finds nothing that says lockgw.
  While ``[phone_link] accept_v1`` lets old phones in, the legacy name and service are
  back (a reload switches them), and a v1 phone finds the hub by them.
- **A passive capture over BLE**: everything that crossed BlueZ's bus while a phone
  opened the door through ``lockgw run`` (``dbus-monitor`` on the private bus: every
  GATT write and read between the phone's adapter and the gateway's, in both directions)
  holds no token field; the same capture of a v1 exchange does hold them — the capture
  would have seen them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from bluez_env import BluezEnv
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus
from test_phone_ble import Door
from test_private_exchange import _secrets_of, windows_now

import gateway.phone_ble as phone_ble
import protocols.advert as advert
from gateway.phone_ble import BluezPhonePeripheral
from protocols.advert import (
    LEGACY_UUIDS,
    advert_epoch,
    advert_uuid,
    derive_advert_key,
    expected_adverts,
    site_uuids,
)
from protocols.phone import PHONE_SERVICE_UUID
from simulators.broker import MosquittoBroker
from simulators.phone_ble import Recogniser
from simulators.platform import Platform
from simulators.site import Carer, DeviceSpec, Org, SimSite

#: "lockgw" in ASCII, as the legacy UUIDs spell it
LOCKGW_HEX = b"lockgw".hex()


def _uuids_of(key: bytes) -> list[str]:
    u = site_uuids(key)
    return [u.service, u.rx, u.tx, *(advert_uuid(key, e) for e in range(100))]


def test_the_site_uuids_look_random_and_belong_to_one_site() -> None:
    """Version-4 UUIDs like any vendor's random ones, nothing of lockgw in them; the same
    for one key, different for another; the advertising key is one-way from the exchange
    key and differs per site."""
    key = secrets.token_bytes(32)
    mine = _uuids_of(key)
    assert mine == _uuids_of(key)
    assert len(set(mine)) == len(mine)
    assert not set(mine) & set(_uuids_of(secrets.token_bytes(32)))
    for u in mine:
        parsed = UUID(u)
        assert (parsed.version, parsed.variant) == (4, "specified in RFC 4122"), u
        assert LOCKGW_HEX not in u.replace("-", ""), u
        assert u not in (PHONE_SERVICE_UUID, LEGACY_UUIDS.rx, LEGACY_UUIDS.tx)
    xkey = secrets.token_bytes(32)
    assert derive_advert_key(xkey, "site-a") != derive_advert_key(xkey, "site-b")
    assert derive_advert_key(xkey, "site-a") == derive_advert_key(xkey, "site-a")
    with pytest.raises(ValueError, match="32 bytes"):
        site_uuids(b"short")


def test_a_phone_recognises_its_site_within_its_clock_skew_only() -> None:
    key = secrets.token_bytes(32)
    now = 1_800_000_000.0
    epoch = advert_epoch(now)
    seen = expected_adverts(key, now)
    assert {advert_uuid(key, e) for e in range(epoch - 2, epoch + 3)} == seen
    assert advert_uuid(key, epoch - 3) not in seen and advert_uuid(key, epoch + 3) not in seen
    assert advert_uuid(key, epoch) != advert_uuid(key, epoch + 1)
    current = [advert_uuid(key, advert_epoch(time.time()))]
    assert Recogniser(key).matches(current, None)
    assert Recogniser(key).matches([site_uuids(key).service], None)  # a device seen connected
    assert not Recogniser(secrets.token_bytes(32)).matches(current, None)
    assert not Recogniser(None).matches(current, None)  # a v1 phone looks for the name
    assert Recogniser(None).matches([], "lockgw")


async def _props(bus: MessageBus, owner: str, path: str, interface: str) -> dict[str, Any]:
    reply = await bus.call(Message(
        destination=owner, path=path, interface="org.freedesktop.DBus.Properties",
        member="GetAll", signature="s", body=[interface],
    ))  # fmt: skip
    assert reply is not None and reply.message_type == MessageType.METHOD_RETURN, reply
    return {k: v.value for k, v in reply.body[0].items()}


async def _scan(
    adapter: str, address: str, seconds: float, devices: list[Any] | None = None
) -> list[Any]:
    """Every advertisement of ``address`` a scan on ``adapter`` reports in ``seconds``
    (and the device, to connect to, in ``devices``)."""
    from bleak import BleakScanner

    seen: list[Any] = []

    def found(device: Any, adv: Any) -> None:
        if device.address.upper() == address.upper():
            seen.append(adv)
            if devices is not None:
                devices.append(device)

    async with BleakScanner(found, bluez={"adapter": adapter}):
        await asyncio.sleep(seconds)
    return seen


@pytest.mark.slow
async def test_a_passer_by_sees_no_name_and_a_uuid_that_changes(
    bluez_here: BluezEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The peripheral ``lockgw run`` serves, on hci0, with 3-second epochs (900 s in
    service): what it hands BlueZ to advertise, and what a scan on hci1 reports."""
    monkeypatch.setattr(advert, "ROTATION_S", 3)
    monkeypatch.setattr(phone_ble, "ROTATION_S", 3)
    key = secrets.token_bytes(32)
    gw = bluez_here.adapter("hci0").address
    bus = await MessageBus(bus_address=bluez_here.bus_address).connect()
    async with BluezPhonePeripheral(Door(), advert_key=key, adapter="hci0") as p:
        assert p._bus is not None
        owner = p._bus.unique_name
        adv_path = f"{p.APP_PATH}/adv0"
        props = await _props(bus, owner, adv_path, "org.bluez.LEAdvertisement1")
        # all a real BlueZ puts in the air besides the flags: no LocalName, no Includes,
        # no ManufacturerData / ServiceData / Appearance
        assert set(props) == {"Type", "ServiceUUIDs", "Discoverable"}, props
        assert props["ServiceUUIDs"] == [advert_uuid(key, advert_epoch(time.time()))] or (
            props["ServiceUUIDs"] == [advert_uuid(key, advert_epoch(time.time()) - 1)]
        )

        heard: set[str] = set()
        async with asyncio.timeout(40):
            while len(heard) < 2:
                for adv in await _scan("hci1", gw, 2.0):
                    assert not adv.manufacturer_data and not adv.service_data, adv
                    # BlueZoo adds its adapter's alias as the name; BlueZ adds none
                    assert adv.local_name != "lockgw", adv
                    assert len(adv.service_uuids) == 1, adv
                    (u,) = adv.service_uuids
                    assert u in expected_adverts(key, time.time()), (u, adv)
                    assert Recogniser(key).matches(adv.service_uuids, adv.local_name)
                    assert not Recogniser(None).matches(adv.service_uuids, adv.local_name)
                    heard.add(u)
        assert len(heard) >= 2, heard  # it changed with the epoch

        # the v1 migration switched on (a reload): the legacy service and name are back ...
        await p.set_legacy(True)
        props = await _props(bus, owner, adv_path, "org.bluez.LEAdvertisement1")
        assert props["LocalName"] == "lockgw", props
        legacy = await _props(bus, owner, f"{p.APP_PATH}/service1", "org.bluez.GattService1")
        assert legacy["UUID"] == PHONE_SERVICE_UUID
        async with asyncio.timeout(20):
            while not any(Recogniser(None).matches(a.service_uuids, a.local_name)
                          for a in await _scan("hci1", gw, 2.0)):  # fmt: skip
                pass
        # ... and gone when it is switched off again
        await p.set_legacy(False)
        props = await _props(bus, owner, adv_path, "org.bluez.LEAdvertisement1")
        assert "LocalName" not in props, props
        assert p.up
    bus.disconnect()


@contextlib.asynccontextmanager
async def _monitor(bus_address: str, out: Path) -> AsyncIterator[None]:
    """``dbus-monitor --binary`` on the private bus for the ``with`` block: every message on
    it, raw — in BlueZoo's world, the radio between the adapters."""
    with out.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            "dbus-monitor", "--address", bus_address, "--binary",
            stdout=sink, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await asyncio.sleep(1.0)  # it has become a monitor
        assert proc.returncode is None, await proc.stderr.read() if proc.stderr else b""
        try:
            yield
        finally:
            await asyncio.sleep(0.5)
            proc.terminate()
            await proc.wait()


async def _gatt_uuids(device: Any) -> list[str]:
    """Every service and characteristic UUID a stranger who connects finds."""
    from bleak import BleakClient

    client = BleakClient(device, timeout=20)
    await client.connect()
    try:
        out: list[str] = []
        for service in client.services:
            out.append(service.uuid)
            out.extend(c.uuid for c in service.characteristics)
        return out
    finally:
        await client.disconnect()


@pytest.mark.slow
async def test_over_bluez_a_listener_hears_no_token_field_and_a_stranger_finds_no_lockgw(
    tmp_path: Path, broker: MosquittoBroker, bluez_here: BluezEnv
) -> None:
    """``lockgw run`` serving phones on hci0, a lock on hci1, a carer's phone on hci2 and a
    stranger on hci3."""
    bluez = bluez_here
    sim = SimSite(
        tmp_path / "home",
        devices=[DeviceSpec("front-lock", "front", "lock", "carelock-lock", adapter="hci1")],
        bluetooth="hci0",
        env={"DBUS_SYSTEM_BUS_ADDRESS": bluez.bus_address},
    )
    async with sim:
        org = sim.add_org(Org("org-west", "Thuiszorg West", roles=("verzorgende",),
                              purposes=("planned",)))  # fmt: skip
        await sim.start_devices()
        sim.write_config(broker.url, phone_link="ble = true\ndevice_timeout = 5")
        await sim.pair_all()
        async with Platform(broker.url, sim.site) as platform:
            await sim.start_gateway()
            await platform.wait_for(lambda e: e["type"] == "device.online", timeout=30)
            code, out = await sim.cli("site-key", "show", "--phone", "--config", str(sim.config))
            assert code == 0, out
            shown = json.loads(out)
            # what the issuer puts in each phone's bundle
            key = base64.urlsafe_b64decode(shown["advert_key"] + "==")
            assert len(key) == 32
            gw = bluez.adapter("hci0").address

            # a stranger scanning: one UUID it cannot place, no lockgw name
            async with asyncio.timeout(30):
                advs: list[Any] = []
                devices: list[Any] = []
                while not advs:
                    advs = await _scan("hci3", gw, 2.0, devices)
            for adv in advs:
                assert adv.local_name != "lockgw" and not adv.manufacturer_data, adv
                assert [u for u in adv.service_uuids if u in expected_adverts(key, time.time())]
                assert PHONE_SERVICE_UUID not in adv.service_uuids, adv
            # ... and connecting: the site's own service, nothing that spells lockgw
            found = await _gatt_uuids(devices[-1])
            assert site_uuids(key).service in found, found
            assert not [u for u in found if LOCKGW_HEX in u.replace("-", "")], found

            # a carer's phone opens the door while everything on the bus is recorded
            anna = Carer("Anna", "anna-7f3c", org, "verzorgende")
            sim.issue(anna, windows=windows_now()[0])  # a schedule to keep secret
            capture = tmp_path / "v2.dbus"
            async with _monitor(bluez.bus_address, capture):
                result = await sim.attempt_ble(anna, "hci2")
            assert result is not None and result.granted, result
            heard = capture.read_bytes()
            for frame in (b"hello2", b"challenge2", b"result2"):  # it saw both directions
                assert frame in heard, frame
            for what, secret in _secrets_of(anna.token, anna, sim.site).items():
                assert secret not in heard, f"{what} crossed the air readable"
            ev = await platform.wait_for(lambda e: e.get("id") == result.event)
            assert ev["sub"] == "anna-7f3c"  # sealed, not lost

            # the same capture of the old exchange (accept_v1, switched on by a reload)
            # does hold the token's fields: this capture would have seen them
            sim.config.write_text(
                sim.config.read_text().replace("[phone_link]\n", "[phone_link]\naccept_v1 = true\n")
            )
            sim.procs["gateway"].send_signal(signal.SIGHUP)
            log = sim.dir / "gateway.log"
            async with asyncio.timeout(30):
                while '"phone_ble.legacy"' not in log.read_text(errors="replace"):  # noqa: ASYNC110
                    await asyncio.sleep(0.2)
            capture = tmp_path / "v1.dbus"
            async with _monitor(bluez.bus_address, capture):
                result = await sim.attempt_ble(anna, "hci2", v1=True)
            assert result is not None and result.granted, result
            heard = capture.read_bytes()
            assert b"anna-7f3c" in heard and anna.org.id.encode() in heard


class _SteppedClock:
    """``time`` for the peripheral's modules: the real clock plus an offset a test steps,
    as NTP does on a hub that started without a clock battery."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset


@pytest.mark.slow
async def test_the_advertisement_follows_a_clock_that_ntp_sets(
    bluez_here: BluezEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub starts three days behind; NTP sets its clock: a scan sees the right epoch's
    UUID soon after (the wall clock is looked at every CLOCK_LOOK seconds), not only when
    the wrong epoch ends (up to 15 minutes)."""
    import gateway._bluez_gatt as gatt

    clock = _SteppedClock()
    clock.offset = -3 * 86400.0
    monkeypatch.setattr(phone_ble, "time", clock)
    monkeypatch.setattr(gatt, "time", clock)
    monkeypatch.setattr(phone_ble, "CLOCK_LOOK", 0.5)
    key = secrets.token_bytes(32)
    gw = bluez_here.adapter("hci0").address
    async with BluezPhonePeripheral(Door(), advert_key=key, adapter="hci0"):
        behind = expected_adverts(key, clock.time(), slack=0)
        async with asyncio.timeout(20):
            while not [a for a in await _scan("hci1", gw, 1.5) if set(a.service_uuids) & behind]:
                pass
        clock.offset = 0.0  # NTP
        right = expected_adverts(key, time.time(), slack=0)
        async with asyncio.timeout(20):
            while not [a for a in await _scan("hci1", gw, 1.5) if set(a.service_uuids) & right]:
                pass
