"""No late and no orphan openings (issue 15, item 3), with real processes: ``lockgw
run``, a carelock lock simulator reached through bleak, mosquitto, phones and signed
commands. Each test says what the phone (or the alarm centre) hears, what the journal
holds, what the platform receives and what state the lock ends in.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
from test_door_faults import health, remote, until
from test_door_process import DEVICE_TIMEOUT, home, lock_state, west, windows_now

from simulators.broker import MosquittoBroker
from simulators.platform import Platform
from simulators.site import Carer, Org, SimSite

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


# -- an opening still waiting for its relock when the gateway stops or crashes -----------------

#: the run before the stop: a window no test outlasts, so nothing is relocked live
WAIT_LONG = "[access]\nrelock_unused_after = 600\n"
#: the run after it: the window is over (the time since the grant counts), relock at once
WAIT_SHORT = "[access]\nrelock_unused_after = 2\n"


def _log_size(sim: SimSite) -> int:
    log = sim.dir / "gateway.log"
    return log.stat().st_size if log.exists() else 0


def _log_events(sim: SimSite, since: int, name: str) -> list[Event]:
    """The gateway's JSON log lines called ``name`` written after byte ``since``."""
    with (sim.dir / "gateway.log").open("rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    out = []
    for line in text.splitlines():
        if f'"{name}"' in line:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


async def _restart(
    sim: SimSite, platform: Platform, broker: MosquittoBroker, *, sig: int
) -> tuple[int, int]:
    """Stop the gateway with ``sig``, give it the short window, start it again; (the
    platform's last seq before, the log's size before) once it is ready."""
    code = await sim.stop("gateway", sig=sig)
    assert code == (0 if sig == signal.SIGTERM else -sig), code
    sim.write_config(broker.url, extra=WAIT_SHORT, phone_link=f"device_timeout = {DEVICE_TIMEOUT}")
    before, size = platform.checker.last_seq, _log_size(sim)
    await sim.start_gateway()
    await platform.wait_for(lambda e: e["type"] == "gateway.started", after_seq=before)
    await until(lambda: _logged(sim, size, "gateway.ready"))
    return before, size


async def _logged(sim: SimSite, since: int, name: str) -> bool:
    return bool(_log_events(sim, since, name))


async def _granted(sim: SimSite, platform: Platform, org: Org) -> Event:
    """Anna unlocks by phone; her access.granted as published, the lock unlocked."""
    inside, _ = windows_now()
    anna = Carer("Anna", "anna", org, "verzorgende")
    sim.issue(anna, windows=inside)
    result = await sim.attempt(anna)
    assert result.granted, result
    granted = await platform.wait_for(lambda e: e.get("id") == result.event, timeout=15)
    assert await lock_state(sim) == "unlocked"
    return granted


async def _nothing_more_relocked(sim: SimSite, platform: Platform, size: int) -> list[Event]:
    """After a restart: the gateway found no opening waiting (its log since byte
    ``size``), and the journal, read after a battery event journaled after the start,
    holds no relock from it; the journal's rows."""
    assert not _log_events(sim, size, "door.relock_resumed")
    before = platform.checker.last_seq
    await sim.switch("front-lock", "battery", "50")
    await platform.wait_for(lambda e: e["type"] == "battery", after_seq=before, timeout=60)
    rows = await journal_rows(sim)
    return rows


def _relocks(rows: list[Event]) -> list[Event]:
    return [r for r in rows if r["type"] in ("door.relocked", "door.left_unlocked")]


async def test_an_unused_opening_is_locked_again_after_a_kill_9(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """Anna unlocks by phone and does not go in; the gateway is killed (``kill -9``)
    while the relock waits. Started again, it finds the opening in the journal, asks the
    lock (unlocked, door contact closed) and locks it: ``door.relocked`` (why
    ``not_opened_before_restart``) naming her attempt, journaled and published once; the
    lock ends locked. A second restart relocks nothing more."""
    org = west()
    async with home(tmp_path, broker, [org], extra=WAIT_LONG) as (sim, platform):
        granted = await _granted(sim, platform, org)
        await _restart(sim, platform, broker, sig=signal.SIGKILL)
        relocked = await platform.wait_for(
            lambda e: e["type"] == "door.relocked" and e["attempt"] == granted["id"], timeout=60
        )
        assert relocked["why"] == "not_opened_before_restart", relocked
        assert (relocked["iss"], relocked["sub"]) == (org.id, "anna"), relocked
        await until(lambda: _lock_is(sim, "locked"))

        _, size = await _restart(sim, platform, broker, sig=signal.SIGTERM)
        rows = await _nothing_more_relocked(sim, platform, size)
        mine = [r for r in rows if r.get("attempt") == granted["id"]]
        assert [r["type"] for r in mine] == ["door.relocked"], mine
        sent = [e for e in platform.checker.events if e.get("attempt") == granted["id"]]
        assert [e["type"] for e in sent] == ["door.relocked"], sent
        assert await lock_state(sim) == "locked"
        assert not platform.checker.gaps()


async def test_an_unused_remote_opening_is_locked_again_after_a_clean_stop(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """The alarm centre opens remotely; nobody comes; the gateway is stopped (SIGTERM,
    ``systemctl restart``) while the relock waits: the stop drops the timer, ends the
    visit ``gateway_stopped`` and journals ``gateway.stopping``. Started again, it
    relocks: ``door.relocked`` (why ``not_opened_before_restart``) with the command's
    request id, after ``gateway.stopping``; the lock ends locked."""
    async with home(tmp_path, broker, [west()], extra=WAIT_LONG) as (sim, platform):
        rid = await remote(sim, platform, "unlock")
        await platform.wait_for(
            lambda e: e["type"] == "command.result" and e["request_id"] == rid and e["ok"],
            timeout=15,
        )
        granted = next(
            e
            for e in platform.checker.events
            if e["type"] == "access.granted" and e.get("request_id") == rid
        )
        assert await lock_state(sim) == "unlocked"
        await _restart(sim, platform, broker, sig=signal.SIGTERM)
        relocked = await platform.wait_for(
            lambda e: e["type"] == "door.relocked" and e["attempt"] == granted["id"], timeout=60
        )
        assert relocked["why"] == "not_opened_before_restart", relocked
        assert relocked["request_id"] == rid and relocked["actor"] == granted["actor"], relocked
        await until(lambda: _lock_is(sim, "locked"))
        rows = await journal_rows(sim)
        types = [r["type"] for r in rows]
        assert types.index("gateway.stopping") < types.index("door.relocked"), types
        assert types.count("door.relocked") == 1, types


async def test_an_opening_used_before_a_crash_is_not_locked_after_it(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """Anna unlocks and goes in (the door contact opens and closes again); the gateway is
    killed. Her opening was used: after the restart nothing is relocked, the lock stays
    unlocked (the visit is hers to end)."""
    org = west()
    async with home(tmp_path, broker, [org], extra=WAIT_LONG) as (sim, platform):
        await _granted(sim, platform, org)
        await sim.switch("front-lock", "door", "open")
        await platform.wait_for(
            lambda e: e["type"] == "lock.state" and e.get("door_state") == "open", timeout=15
        )
        await sim.switch("front-lock", "door", "close")
        await platform.wait_for(
            lambda e: e["type"] == "lock.state" and e.get("door_state") == "closed", timeout=15
        )
        _, size = await _restart(sim, platform, broker, sig=signal.SIGKILL)
        rows = await _nothing_more_relocked(sim, platform, size)
        assert not _relocks(rows), rows
        assert await lock_state(sim) == "unlocked"


async def test_a_lock_unlocked_by_hand_is_not_locked_after_a_restart(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """Anna's phone unlocks, then the resident turns the thumb-turn: locked (journaled),
    which ends the gateway's opening. The gateway is killed and, while it is down, the
    resident turns it open again. That unlock is nobody's the journal knows: after the
    restart nothing is relocked and the lock stays unlocked."""
    org = west()
    async with home(tmp_path, broker, [org], extra=WAIT_LONG) as (sim, platform):
        granted = await _granted(sim, platform, org)
        await sim.switch("front-lock", "turn", "lock")
        await platform.wait_for(
            lambda e: e["type"] == "lock.state"
            and e["lock"] == "locked"
            and e["seq"] > granted["seq"],
            timeout=15,
        )
        assert await sim.stop("gateway", sig=signal.SIGKILL) == -signal.SIGKILL
        await sim.switch("front-lock", "turn", "unlock")
        assert await lock_state(sim) == "unlocked"
        _, size = await _restart(sim, platform, broker, sig=signal.SIGKILL)  # already stopped
        rows = await _nothing_more_relocked(sim, platform, size)
        assert not _relocks(rows), rows
        assert await lock_state(sim) == "unlocked"


async def test_a_relock_after_a_restart_that_fails_leaves_the_door_unlocked_and_says_so(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """An unused remote opening, the gateway killed, and the bolt jams before it is back:
    after the restart locking again fails. ``door.left_unlocked`` (why
    ``not_opened_before_restart``, with the reason) is journaled and published, and
    health says the door is left unlocked."""
    async with home(tmp_path, broker, [west()], extra=WAIT_LONG) as (sim, platform):
        rid = await remote(sim, platform, "unlock")
        await platform.wait_for(
            lambda e: e["type"] == "command.result" and e["request_id"] == rid and e["ok"],
            timeout=15,
        )
        assert await sim.stop("gateway", sig=signal.SIGKILL) == -signal.SIGKILL
        await sim.switch("front-lock", "jam", "on")
        await _restart(sim, platform, broker, sig=signal.SIGKILL)
        left = await platform.wait_for(lambda e: e["type"] == "door.left_unlocked", timeout=60)
        assert left["why"] == "not_opened_before_restart" and left["request_id"] == rid, left
        assert left["detail"], left
        await until(lambda: health_says(sim, "left unlocked"))
        await until(lambda: _retained_problem(platform, "left_unlocked"))
        rows = await journal_rows(sim)
        assert not [r for r in rows if r["type"] == "door.relocked"], rows


async def test_a_late_answer_the_gateway_did_not_see_is_attributed_and_locked_after_a_restart(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """The lock's link is slow (``delay_ms`` 4000 each way, ``device_timeout`` 5 s): Anna's
    unlock reaches the lock after 4 s and the bolt moves, but its answer and notice would
    be back only after 8 s. At 5 s the door gives up (``device_unavailable``) and watches
    for a late answer; the gateway is killed then, before the notice arrives. Started
    again within the minute, it asks the lock: unlocked — ``device.late_answer`` naming
    her attempt, then ``door.relocked`` (why ``late_answer_before_restart``); the lock
    ends locked."""
    inside, _ = windows_now()
    org = west()
    async with home(tmp_path, broker, [org], device_timeout=5) as (sim, platform):
        anna = Carer("Anna", "anna", org, "verzorgende")
        sim.issue(anna, windows=inside)
        await sim.switch("front-lock", "delay_ms", 4000)
        result = await sim.attempt(anna, timeout=15)
        assert (result.granted, result.reason) == (False, "device_unavailable"), result
        assert await sim.stop("gateway", sig=signal.SIGKILL) == -signal.SIGKILL
        await sim.switch("front-lock", "clear")
        assert await lock_state(sim) == "unlocked"
        rows = await journal_rows(sim)
        assert not [r for r in rows if r.get("attempt") == result.event], rows  # not seen live
        await sim.start_gateway()

        late = await platform.wait_for(
            lambda e: e["type"] == "device.late_answer" and e["attempt"] == result.event,
            timeout=60,
        )
        assert (late["iss"], late["sub"], late["lock"]) == (org.id, "anna", "unlocked"), late
        relocked = await platform.wait_for(
            lambda e: e["type"] == "door.relocked" and e["attempt"] == result.event, timeout=60
        )
        assert relocked["why"] == "late_answer_before_restart", relocked
        assert relocked["sub"] == "anna", relocked
        await until(lambda: _lock_is(sim, "locked"))
        rows = await journal_rows(sim)
        mine = [r for r in rows if r.get("attempt") == result.event]
        assert [r["type"] for r in mine] == ["device.late_answer", "door.relocked"], mine


async def test_a_lock_out_of_reach_after_a_restart_is_said_left_unlocked_until_relocked(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """An unused phone opening, the gateway killed, and the lock out of reach when it
    starts again (every connection refused): the opening cannot be relocked yet, and
    health and the retained state say the door is left unlocked (not only that the lock
    is offline). Once the lock can be reached, it is relocked (``door.relocked``, why
    ``not_opened_before_restart``) and health no longer says so."""
    org = west()
    async with home(tmp_path, broker, [org], extra=WAIT_LONG) as (sim, platform):
        granted = await _granted(sim, platform, org)
        assert await sim.stop("gateway", sig=signal.SIGKILL) == -signal.SIGKILL
        await sim.switch("front-lock", "refuse", True)
        await _restart(sim, platform, broker, sig=signal.SIGKILL)  # already stopped
        await until(lambda: health_says(sim, "left unlocked"), timeout=60)
        await until(lambda: _retained_problem(platform, "left_unlocked"))
        await sim.switch("front-lock", "clear")
        relocked = await platform.wait_for(
            lambda e: e["type"] == "door.relocked" and e["attempt"] == granted["id"], timeout=60
        )
        assert relocked["why"] == "not_opened_before_restart", relocked
        await until(lambda: _lock_is(sim, "locked"))
        await until(lambda: _not(health_says(sim, "left unlocked")), timeout=60)
