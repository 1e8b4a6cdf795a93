"""A device's pairings, as the gateway sees and manages them (issue 17, item 3).

The rogue-pairing sequence: while the installer's pairing window is open, a stranger's
central runs the pairing exchange first. The device holds it pending with the stranger's
code on its display; ``lockgw pair`` is refused meanwhile and shows no code, so the
installer rejects the shown one on the device: nothing is stored, the stranger's key
opens no session, and the gateway pairs next (confirmed on the device).

Should the installer confirm the stranger's code by mistake, the gateway finds the pairing
at its next look (journaled ``device.pairing_unknown``, health warns), ``lockgw devices
pairings`` lists it and removes it, the stranger's keys stop working, and the gateway
journals the removal. The device keeps a small number of pairings and refuses more — a
rogue cannot push the gateway's pairing out.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from drivers.ble import make_client
from drivers.carelock import CarelockLockDriver
from gateway.devices.secrets import FileSecretStore
from gateway.health import evaluate, read_snapshot
from protocols.carelock import (
    CentralPairing,
    CentralSession,
    Kind,
    NotConfirmed,
    PairDoneReason,
    Pairing,
    Status,
    decode_frame,
    gatt,
)
from protocols.carelock.frames import PairNonce, PairRequest, SessionAccept
from protocols.errors import PairingError
from simulators.broker import MosquittoBroker
from simulators.carelock_device import CarelockDevice
from simulators.platform import Platform
from simulators.site import DeviceSpec, SimSite
from tests.simprocs import pair_confirmed


def _pair(d: CarelockDevice, now: float = 0.0) -> bool:
    """A whole pairing with the device model, confirmed on the device: stored?"""
    central = CentralPairing()
    req = decode_frame(central.request())
    assert isinstance(req, PairRequest)
    frame, pending = d.pair(req, now)
    if pending is None:
        return False
    nonce = decode_frame(central.committed(frame))
    assert isinstance(nonce, PairNonce)
    done: list[bytes] = []
    d.on_pair_done = lambda _link, frame, _code: done.append(frame)
    reveal, pairing = d.reveal(pending, nonce, now)
    if pairing is None:
        return False
    central.finish(reveal)
    d.press("confirm", now)
    try:
        central.done(done[-1])
    except NotConfirmed:
        return False
    return True


def test_a_full_device_refuses_a_pairing_and_keeps_the_ones_it_has() -> None:
    d = CarelockDevice(Kind.LOCK, max_pairings=2)
    for _ in range(2):
        d.switch("pairing", "on", 0)
        assert _pair(d)
    held = d.pairing_ids()
    d.switch("pairing", "on", 0)
    assert not _pair(d)  # refused, and nobody's pairing was pushed out for it
    assert d.pairing_ids() == held
    assert d.remove_pairing(held[0]) and d.pairing_ids() == held[1:]
    assert not d.remove_pairing(held[0])


class RogueCentral:
    """A stranger's central at the lock's address speaking carelock frame by frame."""

    def __init__(self, address: str) -> None:
        self.client = make_client(address)
        self.frames: asyncio.Queue[bytes] = asyncio.Queue()
        self.central = CentralPairing()

    async def exchange(self, frame: bytes) -> bytes:
        await self.client.write_gatt_char(gatt.CONTROL_POINT, frame, response=False)
        return await self.next()

    async def next(self) -> bytes:
        async with asyncio.timeout(10):
            return await self.frames.get()

    async def until_reveal(self) -> Pairing:
        """PAIR_REQUEST … PAIR_REVEAL: the keys and code the stranger now has."""
        nonce = self.central.committed(await self.exchange(self.central.request()))
        return self.central.finish(await self.exchange(nonce))


@asynccontextmanager
async def _rogue_central(address: str) -> AsyncIterator[RogueCentral]:
    rogue = RogueCentral(address)
    await rogue.client.connect()
    try:
        await rogue.client.start_notify(
            gatt.CONTROL_POINT, lambda _c, data: rogue.frames.put_nowait(bytes(data))
        )
        yield rogue
    finally:
        await rogue.client.disconnect()


@pytest.mark.slow
async def test_a_rogue_that_pairs_first_in_the_installers_window_gets_nothing(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    sim = SimSite(tmp_path / "home", devices=[DeviceSpec("front-lock", "front", "lock", "carelock-lock")])
    async with sim:
        sim.write_config(broker.url)
        await sim.start_devices()  # the installer pressed the button under the cover
        async with _rogue_central(sim.devices[0].config_address()) as rogue:
            stolen = await rogue.until_reveal()  # a stranger's central is quicker
            state = await sim.switch("front-lock", "state")
            assert state["pending_code"] == stolen.code and state["paired_centrals"] == 0
            # pending: its key opens no session
            probe = CentralSession(stolen.pair_key, stolen.key_id)
            assert decode_frame(await rogue.exchange(probe.open_frame())) == SessionAccept(
                Status.UNKNOWN_KEY
            )
            # lockgw pair meets a device busy with another code and shows none; the display
            # shows one: the installer rejects it
            code, out = await sim.pair("front-lock", button=None)
            assert code == 1 and "waiting for confirmation" in out and "Pairing code" not in out
            await sim.switch("front-lock", "press", "reject")
            with pytest.raises(NotConfirmed) as err:
                rogue.central.done(await rogue.next())
            assert err.value.outcome is PairDoneReason.REJECTED
            probe = CentralSession(stolen.pair_key, stolen.key_id)
            assert decode_frame(await rogue.exchange(probe.open_frame())) == SessionAccept(
                Status.UNKNOWN_KEY
            )
        # the window is still open: the gateway pairs, its code confirmed on the device
        code, out = await sim.pair("front-lock")
        assert code == 0 and "pressed confirm" in out and "Paired front-lock" in out, out
        code, out = await sim.cli("devices", "pairings", "front-lock", "--config", str(sim.config))
        assert code == 0 and "this gateway" in out, out
        assert "NOT this gateway" not in out and stolen.key_id.hex() not in out
        state = await sim.switch("front-lock", "state")
        assert state["paired_centrals"] == 1 and not state["pairing_mode"]


@pytest.mark.slow
async def test_a_rogue_pairing_nobody_confirms_is_refused_and_stored_nowhere(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    sim = SimSite(tmp_path / "home", devices=[DeviceSpec("front-lock", "front", "lock", "carelock-lock")])
    async with sim:
        sim.write_config(broker.url)
        await sim.start_devices()
        await sim.switch("front-lock", "confirm-timeout", "1")  # not to wait a minute here
        async with _rogue_central(sim.devices[0].config_address()) as rogue:
            stolen = await rogue.until_reveal()
            with pytest.raises(NotConfirmed) as err:  # nobody pressed the button
                rogue.central.done(await rogue.next())
            assert err.value.outcome is PairDoneReason.TIMED_OUT
            probe = CentralSession(stolen.pair_key, stolen.key_id)
            assert decode_frame(await rogue.exchange(probe.open_frame())) == SessionAccept(
                Status.UNKNOWN_KEY
            )
        state = await sim.switch("front-lock", "confirm-timeout", "60")
        assert state["paired_centrals"] == 0 and state["pairing_mode"]
        code, out = await sim.pair("front-lock")
        assert code == 0 and "pressed confirm" in out, out
        code, out = await sim.cli("devices", "pairings", "front-lock", "--config", str(sim.config))
        assert code == 0 and "this gateway" in out and "NOT this gateway" not in out, out


def _rogue(sim: SimSite, tmp: Path) -> CarelockLockDriver:
    """A stranger's central with keys of its own, at the lock's address."""
    address = sim.devices[0].config_address()
    return CarelockLockDriver("front-lock", address, secrets=FileSecretStore(tmp))


@pytest.mark.slow
async def test_a_rogue_pairing_in_the_installers_window_is_seen_listed_and_removed(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    sim = SimSite(
        tmp_path / "home",
        devices=[
            DeviceSpec(
                "front-lock", "front", "lock", "carelock-lock",
                extra="health_interval = 1\nreconnect_min = 0.2\nreconnect_max = 1.0",
            )
        ],
    )  # fmt: skip
    async with sim:
        sim.write_config(broker.url)
        await sim.start_devices()
        await sim.pair_all()
        async with Platform(broker.url, sim.site) as platform:
            await sim.start_gateway()
            own = await platform.wait_for(lambda e: e["type"] == "device.paired", timeout=30)
            assert own["device"] == "front-lock"

            # the installer opens the window (to pair again, or another device): a stranger
            # at the door is quicker, and the installer confirms its code by mistake
            await sim.switch("front-lock", "pairing", "on")
            rogue = _rogue(sim, tmp_path / "rogue")
            await pair_confirmed(rogue, f"127.0.0.1:{sim.devices[0].control}")
            await rogue.disconnect()
            seen = await platform.wait_for(
                lambda e: e["type"] == "device.pairing_unknown", timeout=30
            )
            key = seen["key_id"]
            assert seen["device"] == "front-lock" and key != own["key_id"]
            data = sim.dir / "data"
            problems: list[str] = []
            for _ in range(100):  # the health snapshot is written every few seconds
                problems = [r.text for r in evaluate(data, read_snapshot(data))]
                if any(key in p for p in problems):
                    break
                await asyncio.sleep(0.2)
            assert any(f"--remove {key}" in p for p in problems), problems

            # the installer looks and removes it (the service stopped: one connection)
            assert await sim.stop("gateway") == 0
            code, out = await sim.cli("devices", "pairings", "front-lock", "--config", str(sim.config))
            assert code == 0, out
            assert f"{own['key_id']}  this gateway" in out and f"{key}  NOT this gateway" in out
            code, out = await sim.cli(
                "devices", "pairings", "front-lock", "--remove", own["key_id"],
                "--config", str(sim.config),
            )  # fmt: skip
            assert code == 1 and "this gateway's own pairing" in out, out
            code, out = await sim.cli(
                "devices", "pairings", "front-lock", "--remove", key, "--config", str(sim.config)
            )
            assert code == 0 and f"Removed pairing {key}" in out, out
            assert key not in out.split("Removed", 1)[1].split("\n", 1)[1]

            # the stranger's keys no longer open a session
            with pytest.raises(PairingError):
                await rogue.connect()

            before = platform.checker.last_seq
            await sim.start_gateway()
            gone = await platform.wait_for(
                lambda e: e["type"] == "device.pairing_removed", timeout=30, after_seq=before
            )
            assert gone["key_id"] == key
