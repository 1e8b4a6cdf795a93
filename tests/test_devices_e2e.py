"""Device supervision end to end: the carelock simulators as real subprocesses, the real
carelock drivers through bleak and the loopback backend, the installer commands.

Every simulator fault a technician can switch is walked through and what the gateway
reports is checked: link drop, jam, slow replies, battery drain, door left open, key
not returned, corrupt frames, refused pairing.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.config import load_config
from gateway.devices import DeviceManager, FileSecretStore
from protocols.device import Action
from protocols.errors import DeviceFailed, DeviceUnavailable
from protocols.events import LockState
from tests.simprocs import SimProcess, lockgw_pair
from tests.test_devices import ListSink

pytestmark = pytest.mark.slow


def write_config(tmp_path: Path, lock: SimProcess, keysafe: SimProcess, **dev: Any) -> Path:
    settings: dict[str, Any] = dict(
        health_interval=0.5, command_timeout=1.5, reconnect_min=0.1, reconnect_max=0.5,
        door_left_open_after=1.0, key_not_returned_after=1.0,
    )
    settings.update(dev)
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
    path = tmp_path / "lockgw.toml"
    path.write_text(
        '[site]\nid = "site-e2e"\ndata_dir = "data"\n\n'
        '[[devices]]\nid = "front-lock"\ndoor = "front"\ndriver = "carelock-lock"\n'
        f'address = "{lock.address}"\n{extra}\n'
        '[[devices]]\nid = "front-keysafe"\ndoor = "front"\ndriver = "carelock-keysafe"\n'
        f'address = "{keysafe.address}"\n{extra}'
    )
    return path


@pytest.fixture
async def sims() -> AsyncIterator[tuple[SimProcess, SimProcess]]:
    async with SimProcess("lock", pairing=True) as lock, SimProcess(
        "keysafe", pairing=True
    ) as keysafe:
        yield lock, keysafe


@pytest.fixture
async def paired(tmp_path: Path, sims: tuple[SimProcess, SimProcess]) -> Path:
    lock, keysafe = sims
    cfg = write_config(tmp_path, lock, keysafe)
    for device, sim in (("front-lock", lock), ("front-keysafe", keysafe)):
        assert (await lockgw_pair(["pair", "--config", str(cfg), device, "--yes"], sim))[0] == 0
    return cfg


# -- the installer commands ---------------------------------------------------------------
async def test_pair_explains_pairing_mode_then_pairs_and_devices_lists_the_base(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with SimProcess("lock") as lock, SimProcess("keysafe", pairing=True) as keysafe:
        cfg = write_config(tmp_path, lock, keysafe)
        assert await main(["pair", "--config", str(cfg), "front-lock", "--yes"]) == 1
        err = capsys.readouterr().err
        assert "pairing mode" in err and "lockgw-sim" in err
        assert not (tmp_path / "data" / "devices" / "keys" / "front-lock.json").exists()

        await lock.control("pairing", "on")
        code, lock_code = await lockgw_pair(["pair", "--config", str(cfg), "front-lock", "--yes"], lock)
        assert code == 0
        code, safe_code = await lockgw_pair(
            ["pair", "--config", str(cfg), "--device", "front-keysafe", "--yes"], keysafe
        )
        assert code == 0
        out = capsys.readouterr().out
        assert "Paired front-lock" in out and "Paired front-keysafe" in out
        # the installer compared: the code on each display is the one lockgw pair showed
        assert f"Pairing code: {lock_code}\n" in out and f"Pairing code: {safe_code}\n" in out
        assert "confirm it on the device" in out

        # the snapshot knows both at once (the daemon has not run)
        assert await main(["devices", "--config", str(cfg), "--lang", "en"]) == 0
        table = capsys.readouterr().out
        assert "front-lock" in table and "front-keysafe" in table
        assert "carelock-lock" in table and "locked, door closed" in table
        assert "closed, house key inside" in table
        assert await main(["devices", "--config", str(cfg)]) == 0
        table = capsys.readouterr().out
        assert "op slot, deur dicht" in table and "dicht, huissleutel aanwezig" in table

        assert await main(["devices", "--config", str(cfg), "--probe", "--json"]) == 0
        items = {i["id"]: i for i in json.loads(capsys.readouterr().out)}
        assert items["front-lock"]["online"] is True
        assert items["front-lock"]["serial"] not in (None, "unknown")
        assert items["front-keysafe"]["state"]["key"] == "present"
        assert items["front-lock"]["paired_at"] is not None

        # a technician watches the gateway supervise them (a door opened meanwhile)
        await lock.control("door", "open")
        assert await main(["devices", "--config", str(cfg), "--watch", "--for", "2"]) == 0
        lines = capsys.readouterr().out
        assert "front-lock" in lines and "device.online" in lines
        assert "door_state=open" in lines and "front-keysafe" in lines
        await lock.control("door", "close")

        # refused pairing is explained too, and the old keys stay usable
        await lock.control("pairing", "on")
        await lock.control("refuse-pairing", "on")
        assert await main(["pair", "--config", str(cfg), "front-lock", "--yes"]) == 1
        assert "refused" in capsys.readouterr().err
        assert await main(["devices", "--config", str(cfg), "--probe", "--json"]) == 0
        items = {i["id"]: i for i in json.loads(capsys.readouterr().out)}
        assert items["front-lock"]["online"] is True


async def test_pair_stores_nothing_unless_the_code_is_confirmed_on_the_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nobody presses the button (the device gives up after its confirm timeout), or the
    installer rejects the code there: a one-line error, exit 1, no keys, no pairing."""
    async with SimProcess(
        "lock", pairing=True, extra=["--confirm-timeout", "1"]
    ) as lock, SimProcess("keysafe") as keysafe:
        cfg = write_config(tmp_path, lock, keysafe)
        keys = tmp_path / "data" / "devices" / "keys" / "front-lock.json"
        argv = ["pair", "--config", str(cfg), "front-lock", "--yes"]
        code, _ = await lockgw_pair(argv, lock, button=None)
        out, err = capsys.readouterr()
        assert code == 1 and "Pairing code: " in out, out
        assert err.strip().count("\n") == 0, err  # one line
        assert err.startswith("lockgw pair: front-lock is not paired: nobody confirmed"), err
        assert not keys.exists()
        state = await lock.control("state")
        assert state["paired_centrals"] == 0 and state["pairing_mode"]  # try again

        await lock.control("confirm-timeout", "60")  # a person has time to press
        code, shown = await lockgw_pair(argv, lock, button="reject")
        out, err = capsys.readouterr()
        assert code == 1 and f"Pairing code: {shown}\n" in out, out
        assert err.strip().count("\n") == 0 and "rejected on the device" in err, err
        assert not keys.exists() and (await lock.control("state"))["paired_centrals"] == 0

        code, shown = await lockgw_pair(argv, lock)
        out, err = capsys.readouterr()
        assert code == 0 and f"Pairing code: {shown}\n" in out and keys.exists(), err
        state = await lock.control("state")
        assert state["paired_centrals"] == 1 and not state["pairing_mode"]


async def test_devices_probe_reports_a_device_that_is_gone(
    paired: Path, sims: tuple[SimProcess, SimProcess], capsys: pytest.CaptureFixture[str]
) -> None:
    lock, _ = sims
    await lock.stop()
    capsys.readouterr()
    assert await main(["devices", "--config", str(paired), "--probe", "--lang", "en"]) == 0
    out = capsys.readouterr().out
    assert "OFFLINE" in out and "front-lock: offline" in out
    assert await main(["devices", "--config", str(paired), "--probe"]) == 0
    out = capsys.readouterr().out
    assert "NIET BEREIKBAAR" in out and "front-lock: niet bereikbaar" in out


# -- supervision through every fault ------------------------------------------------------
async def test_supervision_through_every_fault(
    paired: Path, sims: tuple[SimProcess, SimProcess], capsys: pytest.CaptureFixture[str]
) -> None:
    lock, keysafe = sims
    cfg = load_config(paired)
    sink = ListSink()

    def dev(b: Any) -> str | None:
        return getattr(b, "device", None)

    async with DeviceManager.from_config(cfg, sink) as mgr:
        await sink.wait_for(lambda b: b.type == "device.online" and dev(b) == "front-lock")
        await sink.wait_for(lambda b: b.type == "device.online" and dev(b) == "front-keysafe")

        # an ordinary unlock, then a lock
        assert (await mgr.execute("front", Action.UNLOCK)).lock is LockState.UNLOCKED
        assert (await mgr.execute("front", Action.LOCK)).lock is LockState.LOCKED

        # link drop: offline, a change while away, back online and reconciled
        await lock.control("refuse", True)
        await lock.control("drop")
        await sink.wait_for(lambda b: b.type == "device.offline" and dev(b) == "front-lock")
        with pytest.raises(DeviceUnavailable):
            await mgr.execute("front", Action.UNLOCK)
        mark = len(sink.bodies)
        await lock.control("door", "open")
        await lock.control("refuse", False)
        await sink.wait_for(lambda b: b.type == "lock.state" and b.door_state == "open",
                            after=mark)
        await sink.wait_for(lambda b: b.type == "device.online" and dev(b) == "front-lock",
                            after=mark)

        # the door stays open: door.left_open
        left = await sink.wait_for(lambda b: b.type == "door.left_open")
        assert left.device == "front-lock" and left.door == "front"
        await lock.control("door", "close")

        # jam: device_failed, and the platform hears "jammed"
        await lock.control("jam", "on")
        with pytest.raises(DeviceFailed):
            await mgr.execute("front", Action.UNLOCK)
        await sink.wait_for(lambda b: b.type == "lock.state" and b.lock == "jammed")
        await lock.control("jam", "off")

        # slow replies: device_unavailable within the bound, then it recovers
        await lock.control("slow", 5000)
        with pytest.raises(DeviceUnavailable):
            await mgr.execute("front", Action.UNLOCK)
        mark = len(sink.bodies)
        await lock.control("slow", 0)
        await sink.wait_for(lambda b: b.type == "device.online" and dev(b) == "front-lock",
                            after=mark)
        assert (await mgr.execute("front", Action.LOCK)).lock is LockState.LOCKED

        # corrupt frames: the driver drops the link, the supervisor brings it back
        await lock.control("corrupt", 1)
        with contextlib.suppress(DeviceUnavailable):
            await mgr.execute("front", Action.UNLOCK)
        assert (await mgr.execute("front", Action.LOCK)).lock is LockState.LOCKED

        # key safe: opened, key taken, compartment shut, key not back in time
        await mgr.execute("front", Action.OPEN)
        await keysafe.control("key", "take")
        await keysafe.control("compartment", "close")
        late = await sink.wait_for(lambda b: b.type == "keysafe.key_not_returned")
        assert late.device == "front-keysafe"

        # battery drain: low, then critical, with days left
        await lock.control("battery", 21)
        await lock.control("drain", "on")
        low = await sink.wait_for(
            lambda b: b.type == "battery" and dev(b) == "front-lock" and b.low, timeout=30
        )
        crit = await sink.wait_for(
            lambda b: b.type == "battery" and dev(b) == "front-lock" and b.critical, timeout=30
        )
        assert low.level <= 20 and not low.critical
        assert crit.level < low.level  # at 10 % or when the device itself flags critical
        assert crit.days_left is not None
        await lock.control("drain", "off")

        # lockgw devices reads the running gateway's snapshot
        mgr.write_snapshot()
        capsys.readouterr()
        assert await main(["devices", "--config", str(paired), "--lang", "en"]) == 0
        out = capsys.readouterr().out
        assert "CRITICAL" in out and "battery critical" in out
        assert await main(["devices", "--config", str(paired)]) == 0
        out = capsys.readouterr().out
        assert "KRITIEK" in out and "batterij bijna leeg" in out
    store = FileSecretStore(cfg.site.data_dir)
    assert store.paired_at("front-lock") is not None
