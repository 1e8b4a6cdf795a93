"""Fault injection on the gateway's security state files, with real processes.

A home (simulators/site.py: a paired ``lockgw-sim lock``, mosquitto, ``lockgw run``, a
platform listening) runs; the gateway is stopped, one state file is deleted, cut short,
overwritten or edited behind its checksum, and the gateway started again. For each:
what the phone hears, what the platform receives (``state.fallback``, ``device.offline``,
``command.result``), what ``lockgw health`` says, and the lock's final state.

The cases of issue 15's "Why" that are here: a clock set back with ``time_floor.json``
deleted; revoked carers while ``revocations.json`` is lost and the broker unreachable;
a captured command replayed after ``commands.json`` is lost; a damaged pairing-key file.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest

from protocols.control import Command
from simulators.broker import MosquittoBroker
from simulators.platform import Platform
from simulators.site import Carer, Org, SimSite
from tests.test_door_process import expect, home, lock_state, relock, west

pytestmark = pytest.mark.slow


def faketime(offset: str) -> dict[str, str]:
    """Environment that runs a process with its wall clock moved by ``offset`` (e.g.
    ``-2h``), through the libfaketime the ``libfaketime`` test dependency ships."""
    spec = importlib.util.find_spec("libfaketime")
    assert spec is not None and spec.origin is not None, "pip install libfaketime (test extra)"
    lib = Path(spec.origin).parent / "vendor" / "libfaketime" / "src" / "libfaketime.so.1"
    assert lib.exists(), lib
    return {"LD_PRELOAD": str(lib), "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def damage(path: Path, how: str) -> None:
    """Delete, cut short, overwrite, or edit the data behind the checksum."""
    if how == "deleted":
        path.unlink()
    elif how == "truncated":
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) // 2])
    elif how == "garbage":
        path.write_bytes(b"\x00\x17not json at all\xff" * 5)
    elif how == "wrong checksum":  # someone edited the file by hand
        doc = json.loads(path.read_text())
        inner = doc.get("data", doc.get("secrets", doc))
        if "used" in inner:
            inner["used"] = {}  # forget the used command ids
        else:
            inner[next(iter(inner))] = "0"
        path.write_text(json.dumps(doc))
    else:  # pragma: no cover
        raise ValueError(how)


async def stop_gateway(sim: SimSite) -> None:
    """SIGTERM the gateway and wait for it to end. Its exit status is not this file's
    concern: an orderly stop within its one deadline is pinned by test_door_process
    (test_gateway_stopped_mid_unlock_finishes_it, test_stop_with_broker_frozen_...)."""
    assert await sim.stop("gateway") is not None


async def restart(
    sim: SimSite, platform: Platform, env: dict[str, str] | None = None
) -> int:
    """Start the (stopped) gateway; wait until the platform hears it started. The
    platform's last seq before it, so a test waits for what this run published."""
    before = platform.checker.last_seq
    await sim.start_gateway(env=env)
    await platform.wait_for(lambda e: e["type"] == "gateway.started", after_seq=before, timeout=30)
    return before


async def health(sim: SimSite) -> str:
    code, out = await sim.cli("health", "--config", str(sim.config), "--lang", "en")
    assert code == 1, out
    return out


def state_file(sim: SimSite, name: str) -> Path:
    return sim.dir / "data" / "access" / name


# -- the time floor -----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["deleted", "truncated"])
async def test_clock_set_back_with_the_time_floor_lost_revives_no_expired_token(
    tmp_path: Path, broker: MosquittoBroker, how: str
) -> None:
    """Anna's token expired an hour ago. The gateway stops, ``time_floor.json`` is lost,
    and the hub's clock is set back two hours: the gateway takes its floor from the
    journal's newest event, so Anna still hears ``expired``; the loss is published and
    in health; the lock stays locked."""
    org = west()
    async with home(tmp_path, broker, [org]) as (sim, platform):
        anna = Carer("Anna", "anna", org, "verzorgende")
        sim.issue(anna, valid=-3600, not_before=int(time.time()) - 4 * 3600)
        await expect(sim, platform, anna, "expired")
        await stop_gateway(sim)
        damage(state_file(sim, "time_floor.json"), how)
        before = await restart(sim, platform, env=faketime("-2h"))
        ev = await expect(sim, platform, anna, "expired")
        assert ev["seq"] > before
        assert await lock_state(sim) == "locked"
        lost = await platform.wait_for(
            lambda e: e["type"] == "state.fallback", after_seq=before, timeout=15
        )
        assert lost["file"] == "time_floor.json", lost
        assert lost["problem"] == ("missing" if how == "deleted" else "damaged"), lost
        assert "journal" in lost["fallback"], lost
        await platform.wait_for(lambda e: e["type"] == "clock.untrusted", after_seq=before)
        out = await health(sim)
        assert "time_floor.json was" in out and "journal" in out, out


# -- revocations ---------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["deleted", "garbage"])
async def test_revoked_carer_stays_out_while_the_revocations_are_lost_and_the_broker_is_down(
    tmp_path: Path, broker: MosquittoBroker, how: str
) -> None:
    """Bob is revoked. The gateway stops, ``revocations.json`` is lost, and the gateway
    starts while the broker is unreachable: Bob and every planned-care carer of his
    organisation hear ``revocation_stale`` (nobody knows whom the lost list revoked),
    an emergency token still opens. When the broker is back, the retained list arrives,
    Anna opens again and Bob hears ``revoked``; the platform got ``state.fallback``."""
    org = west()
    async with home(tmp_path, broker, [org]) as (sim, platform):
        anna = Carer("Anna", "anna", org, "verzorgende")
        bob = Carer("Bob", "bob", org, "verzorgende")
        sanne = Carer("Sanne", "sanne", org, "verzorgende", purposes=("emergency",))
        for c in (anna, bob, sanne):
            sim.issue(c)
        await platform.send_revocation(org.id, sim.revocation(org, 5, sub=("bob",)))
        await platform.wait_for(lambda e: e["type"] == "revocation.applied")
        await expect(sim, platform, bob, "revoked")
        await stop_gateway(sim)
        damage(state_file(sim, "revocations.json"), how)
        await broker.stop()
        await sim.start_gateway()
        assert (await sim.attempt(bob)).reason == "revocation_stale"
        assert (await sim.attempt(anna)).reason == "revocation_stale"
        assert await lock_state(sim) == "locked"
        out = await health(sim)
        assert "revocations.json was" in out and org.id in out, out
        emergency = await sim.attempt(sanne)
        assert emergency.reason == "ok", emergency
        await broker.start()
        lost = await platform.wait_for(lambda e: e["type"] == "state.fallback", timeout=30)
        assert lost["file"] == "revocations.json" and lost["issuers"] == [org.id], lost
        applied = await platform.wait_for(
            lambda e: e["type"] == "revocation.applied" and e["seq"] > lost["seq"], timeout=30
        )
        assert applied["list_seq"] == 5
        await relock(sim, platform)
        await expect(sim, platform, bob, "revoked")
        await expect(sim, platform, anna, "ok")
        await relock(sim, platform)


# -- rosters ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["deleted", "garbage"])
async def test_lost_roster_refuses_planned_care_until_it_arrives_again(
    tmp_path: Path, broker: MosquittoBroker, how: str
) -> None:
    """A home that refuses tokens not on the roster (``roster_check = "refuse"``). West's
    roster lists Anna only. The gateway stops, ``rosters.json`` is lost, and it starts
    while the broker is unreachable: nobody knows whom West listed, so West's planned
    care hears ``not_on_roster`` (the journal says the roster was lost), an emergency
    token still opens, and Oost — which never sent a roster — is not affected. Health
    names West; when the broker is back the platform gets ``state.fallback``, the
    retained roster arrives again, and Anna opens (Bram, not listed, still does not)."""
    org = west()
    east = Org("org-oost", "Thuiszorg Oost", roles=("verzorgende",), purposes=("planned",))
    refuse = '[access]\nroster_check = "refuse"\n'
    async with home(tmp_path, broker, [org, east], extra=refuse) as (sim, platform):
        anna = Carer("Anna", "anna", org, "verzorgende")
        bram = Carer("Bram", "bram", org, "verzorgende")
        sanne = Carer("Sanne", "sanne", org, "verzorgende", purposes=("emergency",))
        olga = Carer("Olga", "olga", east, "verzorgende")
        for c in (anna, bram, sanne, olga):
            sim.issue(c)
        await platform.send_roster(org.id, sim.roster(org, 3, [anna]))
        await platform.wait_for(lambda e: e["type"] == "roster.applied")
        await expect(sim, platform, bram, "not_on_roster")
        await expect(sim, platform, anna, "ok")
        await relock(sim, platform)
        await stop_gateway(sim)
        damage(state_file(sim, "rosters.json"), how)
        await broker.stop()
        await sim.start_gateway()
        for carer in (anna, bram):
            refused = await sim.attempt(carer)
            assert (refused.granted, refused.reason) == (False, "not_on_roster"), refused
        assert await lock_state(sim) == "locked"
        out = await health(sim)
        assert "rosters.json was" in out and org.id in out and "not_on_roster" in out, out
        assert east.id not in out, out
        emergency = await sim.attempt(sanne)
        assert emergency.reason == "ok", emergency
        other = await sim.attempt(olga)
        assert other.reason == "ok", other
        await broker.start()
        lost = await platform.wait_for(lambda e: e["type"] == "state.fallback", timeout=30)
        assert lost["file"] == "rosters.json" and lost["issuers"] == [org.id], lost
        assert lost["problem"] == ("missing" if how == "deleted" else "damaged"), lost
        denied = await platform.wait_for(  # journaled while the broker was away
            lambda e: e["type"] == "access.denied" and e["seq"] > lost["seq"]
            and e.get("sub") == "anna",
            timeout=30,
        )  # fmt: skip
        assert denied["reason"] == "not_on_roster", denied
        applied = await platform.wait_for(
            lambda e: e["type"] == "roster.applied" and e["seq"] > lost["seq"], timeout=30
        )
        assert applied["list_seq"] == 3 and applied["iss"] == org.id, applied
        await expect(sim, platform, anna, "ok")
        await relock(sim, platform)
        await expect(sim, platform, bram, "not_on_roster")


# -- used command ids ----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["deleted", "wrong checksum"])
async def test_captured_command_is_not_replayed_after_the_command_ids_are_lost(
    tmp_path: Path, broker: MosquittoBroker, how: str
) -> None:
    """The alarm centre's remote unlock is captured. The gateway stops, ``commands.json``
    is lost (deleted, or edited to forget the id), the gateway starts, and the capture is
    replayed: refused (``command.result`` ok false, ``nonce_reused``), the lock stays
    locked, and the loss is published and in health."""
    org = west()
    async with home(tmp_path, broker, [org]) as (sim, platform):
        captured = sim.command("unlock", valid_for=110)
        rid = Command.decode(captured).request_id
        await platform.send_command(captured)
        first = await platform.wait_for(
            lambda e: e["type"] == "command.result" and e.get("request_id") == rid, timeout=15
        )
        assert first["ok"], first
        await relock(sim, platform)
        await stop_gateway(sim)
        damage(state_file(sim, "commands.json"), how)
        before = await restart(sim, platform)
        await platform.send_command(captured)
        replay = await platform.wait_for(
            lambda e: e["type"] == "command.result" and e.get("request_id") == rid,
            after_seq=before,
            timeout=15,
        )
        assert (replay["ok"], replay["reason"]) == (False, "nonce_reused"), replay
        assert await lock_state(sim) == "locked"
        lost = await platform.wait_for(
            lambda e: e["type"] == "state.fallback", after_seq=before, timeout=15
        )
        assert lost["file"] == "commands.json" and lost["until"], lost
        opened = [
            e for e in platform.checker.events
            if e["type"] == "access.granted" and e.get("request_id") == rid
        ]  # fmt: skip
        assert len(opened) == 1, opened
        out = await health(sim)
        assert "commands.json was" in out, out


# -- pairing keys --------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["garbage", "wrong checksum"])
async def test_damaged_pairing_keys_put_the_device_offline_and_phones_hear_so(
    tmp_path: Path, broker: MosquittoBroker, how: str
) -> None:
    """The lock's pairing-key file is damaged while the gateway is stopped: at start the
    lock is reported offline (``device.offline`` saying to pair it again), a carer
    hears ``device_unavailable`` at once, health names the reason, the lock stays locked."""
    org = west()
    async with home(tmp_path, broker, [org]) as (sim, platform):
        anna = Carer("Anna", "anna", org, "verzorgende")
        sim.issue(anna)
        await stop_gateway(sim)
        damage(sim.dir / "data" / "devices" / "keys" / "front-lock.json", how)
        before = await restart(sim, platform)
        ev = await expect(sim, platform, anna, "device_unavailable", timeout=10)
        assert ev["seq"] > before
        assert await lock_state(sim) == "locked"
        offline = await platform.wait_for(
            lambda e: e["type"] == "device.offline" and e["device"] == "front-lock",
            after_seq=before,
            timeout=15,
        )
        assert "lockgw pair" in offline["reason"] and "damaged" in offline["reason"], offline
        out = await health(sim)
        assert "front-lock (front): offline" in out and "lockgw pair" in out, out
