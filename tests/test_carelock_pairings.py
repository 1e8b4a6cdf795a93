"""A device's pairings, as the gateway sees and manages them (issue 17, item 3).

The rogue-pairing sequence: while the installer's pairing window is open, a stranger's
central pairs with the lock. The gateway finds it at its next look (journaled
``device.pairing_unknown``, health warns), ``lockgw devices pairings`` lists it and
removes it, the stranger's keys stop working, and the gateway journals the removal.
The device keeps a small number of pairings and refuses more — a rogue cannot push
the gateway's pairing out.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from drivers.carelock import CarelockLockDriver
from gateway.devices.secrets import FileSecretStore
from gateway.health import evaluate, read_snapshot
from protocols.carelock import CentralPairing, Kind, decode_frame
from protocols.carelock.frames import PairNonce, PairRequest
from protocols.errors import PairingError
from simulators.broker import MosquittoBroker
from simulators.carelock_device import CarelockDevice
from simulators.platform import Platform
from simulators.site import DeviceSpec, SimSite


def _pair(d: CarelockDevice, now: float = 0.0) -> bool:
    central = CentralPairing()
    req = decode_frame(central.request())
    assert isinstance(req, PairRequest)
    frame, pending = d.pair(req, now)
    if pending is None:
        return False
    nonce = decode_frame(central.committed(frame))
    assert isinstance(nonce, PairNonce)
    return d.reveal(pending, nonce, now)[1] is not None


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
            # at the door is quicker
            await sim.switch("front-lock", "pairing", "on")
            rogue = _rogue(sim, tmp_path / "rogue")
            await rogue.pair()
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
