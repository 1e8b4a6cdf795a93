"""No late and no orphan openings (issue 15, item 3), with real processes: ``lockgw
run``, a carelock lock simulator reached through bleak, mosquitto, phones and signed
commands. Each test says what the phone (or the alarm centre) hears, what the journal
holds, what the platform receives and what state the lock ends in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_door_faults import health, remote, until
from test_door_process import home, lock_state, west, windows_now

from simulators.broker import MosquittoBroker
from simulators.platform import Platform
from simulators.site import Carer, SimSite

pytestmark = pytest.mark.slow

Event = dict[str, Any]


async def journal_rows(sim: SimSite) -> list[Event]:
    """Every journaled event, as ``lockgw audit export --format json`` gives them."""
    code, out = await sim.cli("audit", "export", "--config", str(sim.config), "--format", "json")
    assert code == 0, out
    rows: list[Event] = json.loads(out[out.index("[") :])
    return rows


async def health_says(sim: SimSite, words: str) -> bool:
    _, out = await health(sim)
    return words in out


async def test_a_lock_that_answers_after_the_deadline_is_attributed_and_locked_again(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """``switch slow 8000``: the lock acts 8 s after Anna's unlock, long after the door
    gave up (device_timeout 2 s). Her phone hears ``device_unavailable``; the journal
    says access.denied, then ``device.late_answer`` naming her attempt and her, then
    ``door.relocked``; the platform receives the same; the lock ends locked."""
    inside, _ = windows_now()
    org = west()
    async with home(tmp_path, broker, [org]) as (sim, platform):
        anna = Carer("Anna", "anna", org, "verzorgende")
        sim.issue(anna, windows=inside)
        await sim.switch("front-lock", "slow", "8000")
        result = await sim.attempt(anna, timeout=15)
        assert (result.granted, result.reason) == (False, "device_unavailable"), result
        await sim.switch("front-lock", "slow", "0")  # the command already sent stays slow

        late = await platform.wait_for(
            lambda e: e["type"] == "device.late_answer" and e["attempt"] == result.event,
            timeout=30,
        )
        assert (late["device"], late["door"], late["action"]) == ("front-lock", "front", "unlock")
        assert (late["iss"], late["sub"]) == (org.id, "anna") and late["lock"] == "unlocked"
        relocked = await platform.wait_for(
            lambda e: e["type"] == "door.relocked" and e["attempt"] == result.event, timeout=30
        )
        assert relocked["why"] == "late_answer" and relocked["sub"] == "anna", relocked
        await until(lambda: _lock_is(sim, "locked"))

        rows = await journal_rows(sim)
        denied = next(r for r in rows if r["id"] == result.event)
        assert denied["type"] == "access.denied" and denied["reason"] == "device_unavailable"
        assert denied["sub"] == "anna"
        mine = [r for r in rows if r.get("attempt") == result.event]
        assert [r["type"] for r in mine] == ["device.late_answer", "door.relocked"]
        assert denied["seq"] < mine[0]["seq"] < mine[1]["seq"]
        assert not platform.checker.gaps()


async def test_a_remote_opening_nobody_uses_is_locked_again(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """The alarm centre opens the door remotely; nobody comes (the door contact stays
    closed). After ``[access] relock_unused_after`` (3 s here) the gateway locks it:
    ``door.relocked`` (why ``not_opened``) names the command; the lock ends locked."""
    extra = "[access]\nrelock_unused_after = 3\n"
    async with home(tmp_path, broker, [west()], extra=extra) as (sim, platform):
        rid = await remote(sim, platform, "unlock")
        result = await platform.wait_for(
            lambda e: e["type"] == "command.result" and e["request_id"] == rid, timeout=15
        )
        assert result["ok"] is True, result
        granted = next(
            e
            for e in platform.checker.events
            if e["type"] == "access.granted" and e.get("request_id") == rid
        )
        assert await lock_state(sim) == "unlocked"
        relocked = await platform.wait_for(
            lambda e: e["type"] == "door.relocked" and e["attempt"] == granted["id"], timeout=30
        )
        assert relocked["why"] == "not_opened" and relocked["request_id"] == rid, relocked
        assert relocked["actor"] == granted["actor"]
        assert await lock_state(sim) == "locked"
        ended = await platform.wait_for(
            lambda e: e["type"] == "visit.ended" and e["visit"] == granted["id"], timeout=15
        )
        assert "door_not_opened" in ended["problems"] and ended["relocked"] is True


async def test_an_opening_that_was_used_is_not_locked_by_the_gateway(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """Anna unlocks and opens the door: that opening was used, so the gateway does not
    lock it behind her (the visit follows the door; only an unused opening is relocked)."""
    inside, _ = windows_now()
    org = west()
    extra = "[access]\nrelock_unused_after = 2\n"
    async with home(tmp_path, broker, [org], extra=extra) as (sim, platform):
        anna = Carer("Anna", "anna", org, "verzorgende")
        sim.issue(anna, windows=inside)
        result = await sim.attempt(anna)
        assert result.granted, result
        await sim.switch("front-lock", "door", "open")
        await platform.wait_for(
            lambda e: e["type"] == "lock.state" and e.get("door_state") == "open", timeout=15
        )
        # a later event, journaled after the relock would have been due, closes the window
        await sim.switch("front-lock", "battery", "50")
        await platform.wait_for(lambda e: e["type"] == "battery", timeout=60)
        rows = await journal_rows(sim)
        assert not [r for r in rows if r["type"].startswith("door.relock")], rows
        assert await lock_state(sim) == "unlocked"


async def test_when_locking_again_fails_the_door_is_left_unlocked_until_it_locks(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """An unused remote opening, and then the bolt jams: locking again fails.
    ``door.left_unlocked`` is journaled and published, health says the door is left
    unlocked and keeps saying so, the retained device state carries ``left_unlocked``;
    once the lock locks again (a remote ``lock``), health no longer says it."""
    extra = "[access]\nrelock_unused_after = 3\n"
    async with home(tmp_path, broker, [west()], extra=extra) as (sim, platform):
        rid = await remote(sim, platform, "unlock")
        await platform.wait_for(
            lambda e: e["type"] == "command.result" and e["request_id"] == rid and e["ok"],
            timeout=15,
        )
        await sim.switch("front-lock", "jam", "on")
        left = await platform.wait_for(lambda e: e["type"] == "door.left_unlocked", timeout=30)
        assert left["why"] == "not_opened" and left["request_id"] == rid, left
        assert left["detail"], left
        await until(lambda: health_says(sim, "left unlocked"))
        await until(lambda: _retained_problem(platform, "left_unlocked"))

        await sim.switch("front-lock", "jam", "off")
        rid2 = await remote(sim, platform, "lock")
        await platform.wait_for(
            lambda e: e["type"] == "command.result" and e["request_id"] == rid2 and e["ok"],
            timeout=15,
        )
        assert await lock_state(sim) == "locked"
        await until(lambda: _not(health_says(sim, "left unlocked")))


async def _lock_is(sim: SimSite, state: str) -> bool:
    return await lock_state(sim) == state


async def _not(check: Any) -> bool:
    return not await check


async def _retained_problem(platform: Platform, problem: str) -> bool:
    state = platform.states.get("front-lock") or {}
    return problem in (state.get("problems") or [])
