"""Warnings before anyone is locked out, with a real ``lockgw run``, mosquitto and the
simulated lock: what ``lockgw health`` (words and ``--json``) says, what the retained
``status`` carries, and the ``health.warning`` / ``health.cleared`` events — for a
resident's consent ending and ended, an issuer's revocation list ageing then stale (the
warning before, the refusal after), an issuer's key near and past its end, a lock offline
and jammed."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from test_door_process import expect, home, west, windows_now

from gateway.journal import journal_path
from gateway.journal.heads import heads_path
from simulators.broker import MosquittoBroker
from simulators.platform import Platform
from simulators.site import Carer, Org, SimSite

pytestmark = pytest.mark.slow

HEALTH = "[health]\ninterval = 0.3\nwarn_days = 14\n"


async def health_json(sim: SimSite) -> tuple[int, dict[str, Any]]:
    code, out = await sim.cli("health", "--config", str(sim.config), "--json")
    return code, json.loads(out)


def reason(status: dict[str, Any] | None, code: str, subject: str | None = None) -> Any:
    for r in (status or {}).get("reasons", []):
        if r["code"] == code and (subject is None or r.get("subject") == subject):
            return r
    return None


async def status_has(platform: Platform, code: str, subject: str | None = None, timeout: float = 20) -> dict[str, Any]:
    """Until the retained status carries the reason; that reason."""
    async with asyncio.timeout(timeout):
        while (r := reason(platform.status, code, subject)) is None:  # noqa: ASYNC110 - the retained topic, as a platform sees it
            await asyncio.sleep(0.1)
    return r  # type: ignore[no-any-return]


def warned(code: str, subject: str | None = None, kind: str = "health.warning") -> Any:
    return lambda e: e["type"] == kind and e["code"] == code and (
        subject is None or e.get("subject") == subject
    )


async def test_consent_ending_and_ended_and_a_revocation_list_going_stale(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """West's consent ends tomorrow (a warning: nothing refused yet); East's ended
    yesterday (degraded: its carers are refused). West requires a revocation list at
    most 24 s old: none yet (degraded), then one arrives (cleared), it ages (a warning
    while Anna still gets in), then it is stale (degraded, and Anna is refused
    ``revocation_stale``) — each visible in ``lockgw health``, the retained status and
    as one event each."""
    inside, _ = windows_now()
    today = datetime.now(ZoneInfo("Europe/Amsterdam")).date()
    org = west()
    org.extra = f"revocation_max_age = 24\nconsent_until = {today + timedelta(days=1)}"
    east = Org("org-east", "Zorg Oost", roles=("verzorgende",), purposes=("planned",),
               extra=f"consent_until = {today - timedelta(days=1)}")  # fmt: skip
    async with home(tmp_path, broker, [org, east], extra=HEALTH) as (sim, platform):
        anna = Carer("Anna", "anna", org, "verzorgende")
        sim.issue(anna, windows=inside)
        # no list from West yet: its planned care is refused, said as degraded
        ev = await platform.wait_for(warned("revocation.stale", org.id))
        assert ev["level"] == "degraded" and "Thuiszorg West" in ev["text"], ev
        ev = await platform.wait_for(warned("consent.ending", org.id))
        assert ev["level"] == "warning" and "(over 1 dag)" in ev["text"], ev  # Dutch: the site's language
        ev = await platform.wait_for(warned("consent.ended", east.id))
        assert ev["level"] == "degraded" and "Zorg Oost" in ev["text"], ev
        code, got = await health_json(sim)
        assert code == 1 and got["health"] == "degraded", got
        codes = {(r["code"], r["level"], r["subject"]) for r in got["reasons"]}
        assert {("consent.ending", "warning", org.id), ("consent.ended", "degraded", east.id),
                ("revocation.stale", "degraded", org.id)} <= codes, codes  # fmt: skip
        retained = await status_has(platform, "consent.ending", org.id)
        assert retained["level"] == "warning" and platform.status is not None
        assert platform.status["health"] == "degraded", platform.status
        # the words follow the site's language: Dutch by default
        code, out = await sim.cli("health", "--config", str(sim.config))
        assert out.startswith("lockgw: beperkt") and "toestemming van de bewoner" in out, out

        # the list arrives: the stale reason clears, once
        mark = platform.checker.last_seq
        await platform.send_revocation(org.id, sim.revocation(org, 1))
        ev = await platform.wait_for(warned("revocation.stale", org.id, "health.cleared"), after_seq=mark)
        # it ages: the warning comes while Anna still gets in ...
        ev = await platform.wait_for(warned("revocation.ageing", org.id), after_seq=mark, timeout=40)
        assert ev["level"] == "warning" and "verloopt over" in ev["text"], ev
        await expect(sim, platform, anna, "ok")
        # ... and then it is stale: degraded, and Anna is refused
        ev = await platform.wait_for(warned("revocation.stale", org.id), after_seq=mark, timeout=30)
        assert ev["level"] == "degraded" and "oud (hooguit" in ev["text"], ev
        await expect(sim, platform, anna, "revocation_stale")
        await status_has(platform, "revocation.stale", org.id)
        code, out = await sim.cli("health", "--config", str(sim.config), "--lang", "en")
        assert code == 1 and "the list of Thuiszorg West is" in out and "[degraded]" in out, out
        # said once each, not at every look
        kinds = [(e["type"], e["code"], e.get("subject")) for e in platform.checker.events
                 if e["type"].startswith("health.")]  # fmt: skip
        assert kinds.count(("health.warning", "consent.ending", org.id)) == 1, kinds


async def test_an_issuers_key_near_its_end_is_warned_and_past_it_refused(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """West's key is trusted until the day after tomorrow (a warning: its carers still get
    in); East's was trusted until yesterday (degraded: East's carer is refused
    ``issuer_unavailable``, in words that say what to do)."""
    inside, _ = windows_now()
    today = datetime.now(ZoneInfo("Europe/Amsterdam")).date()
    org = west()
    org.extra = f"key_valid_until = {today + timedelta(days=2)}"
    east = Org("org-east", "Zorg Oost", roles=("verzorgende",), purposes=("planned", "emergency"),
               extra=f"key_valid_until = {today - timedelta(days=1)}")  # fmt: skip
    async with home(tmp_path, broker, [org, east], extra=HEALTH) as (sim, platform):
        ev = await platform.wait_for(warned("key.issuer_expiring", org.id))
        assert ev["level"] == "warning" and "(over 2 dagen)" in ev["text"], ev
        ev = await platform.wait_for(warned("key.issuer_expired", east.id))
        assert ev["level"] == "degraded" and "Zorg Oost" in ev["text"], ev
        anna = Carer("Anna", "anna", org, "verzorgende")
        sim.issue(anna, windows=inside)
        await expect(sim, platform, anna, "ok")
        eva = Carer("Eva", "eva", east, "verzorgende")
        sim.issue(eva, windows=inside)
        await expect(sim, platform, eva, "issuer_unavailable")
        code, got = await health_json(sim)
        assert code == 1 and got["health"] == "degraded", got
        code, out = await sim.cli("health", "--config", str(sim.config), "--lang", "en")
        assert "the key of Zorg Oost was trusted until" in out, out
        await status_has(platform, "key.issuer_expired", east.id)


async def test_a_lock_offline_then_jammed(tmp_path: Path, broker: MosquittoBroker) -> None:
    """The lock's simulator stops: unhealthy (the door cannot be opened), said once and
    cleared when it is back. It jams on an opening: unhealthy until it moves again."""
    inside, _ = windows_now()
    org = west()
    async with home(tmp_path, broker, [org], extra=HEALTH) as (sim, platform):
        code, got = await health_json(sim)
        assert not [r for r in got["reasons"] if r["code"].startswith("device.")], got
        mark = platform.checker.last_seq
        assert await sim.stop("sim-front-lock") is not None
        ev = await platform.wait_for(warned("device.offline", "front-lock"), after_seq=mark, timeout=60)
        assert ev["level"] == "unhealthy", ev
        code, got = await health_json(sim)
        assert code == 1 and got["health"] == "unhealthy", got
        await status_has(platform, "device.offline", "front-lock")
        await sim.start_devices(pairing=False)
        await platform.wait_for(
            warned("device.offline", "front-lock", "health.cleared"), after_seq=mark, timeout=60
        )

        anna = Carer("Anna", "anna", org, "verzorgende")
        sim.issue(anna, windows=inside)
        await sim.switch("front-lock", "jam", "on")
        await sim.attempt(anna, timeout=15)
        ev = await platform.wait_for(warned("device.jammed", "front-lock"), after_seq=mark, timeout=30)
        assert ev["level"] == "unhealthy" and "zit vast" in ev["text"], ev
        code, out = await sim.cli("health", "--config", str(sim.config), "--lang", "en")
        assert code == 1 and out.startswith("lockgw: unhealthy"), out


async def test_a_token_about_to_expire_with_no_newer_one_is_warned_until_one_arrives(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """Anna's token, on West's roster, ends in two hours and no newer one is known: a
    warning (``[health] token_warn_hours = 3``) before she is refused. West sends a new
    roster with her renewed token: cleared."""
    inside, _ = windows_now()
    org = west()
    extra = HEALTH + "token_warn_hours = 3\n"
    async with home(tmp_path, broker, [org], extra=extra) as (sim, platform):
        anna = Carer("Anna", "anna", org, "verzorgende")
        sim.issue(anna, windows=inside, valid=2 * 3600)
        await platform.send_roster(org.id, sim.roster(org, 1, [anna]))
        ev = await platform.wait_for(warned("token.expiring", f"{org.id}/anna"))
        assert ev["level"] == "warning" and "anna" in ev["text"], ev
        await status_has(platform, "token.expiring", f"{org.id}/anna")
        await expect(sim, platform, anna, "ok")  # a warning: nothing refused yet
        renewed = Carer("Anna", "anna", org, "verzorgende", phone=anna.phone)
        sim.issue(renewed, windows=inside, valid=30 * 24 * 3600)
        await platform.send_roster(org.id, sim.roster(org, 2, [anna, renewed]))
        await platform.wait_for(
            warned("token.expiring", f"{org.id}/anna", "health.cleared"), after_seq=ev["seq"]
        )


async def test_a_stopped_gateway_is_not_running_and_a_restarted_one_never_shows_the_last_runs_state(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """After a stop, ``health.json`` is left over: health says lockgw is not running (not
    the state it had). Started again, from the moment its phone link listens health
    tells this process's state — starting, or running — never the last run's."""
    org = west()
    async with home(tmp_path, broker, [org], extra=HEALTH) as (sim, _platform):
        old = sim.procs["gateway"].pid
        assert await sim.stop("gateway") == 0
        code, got = await health_json(sim)
        assert code == 1 and [r["code"] for r in got["reasons"]] == ["daemon.not_running"], got
        assert got["snapshot"]["pid"] == old and "left over" in got["reasons"][0]["text"]
        proc = await sim.start_gateway()
        code, got = await health_json(sim)
        assert got["snapshot"]["pid"] == proc.pid != old, got
        assert "daemon.not_running" not in [r["code"] for r in got["reasons"]], got


async def test_a_journal_head_that_cannot_be_kept_is_warned_and_cleared(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """The signed head cannot be written beside the journal (here: its temporary file's
    name is taken by a directory, as a full or read-only data directory would fail it): a
    warning, in health and on the retained status, not only a log line; cleared once a
    head is kept again."""
    inside, _ = windows_now()
    org = west()
    extra = HEALTH + "[journal]\nhead_interval = 1\n"
    async with home(tmp_path, broker, [org], extra=extra) as (sim, platform):
        _, got = await health_json(sim)
        assert reason(got, "journal.head_not_signed") is None, got
        mark = platform.checker.last_seq
        blocker = heads_path(journal_path(sim.dir / "data"))
        blocker = blocker.with_name(f".{blocker.name}.new")
        blocker.mkdir()
        anna = Carer("Anna", "anna", org, "verzorgende")
        sim.issue(anna, windows=inside)
        await expect(sim, platform, anna, "ok")  # an event: a new head to sign
        ev = await platform.wait_for(warned("journal.head_not_signed"), after_seq=mark, timeout=30)
        assert ev["level"] == "warning" and "cannot write" in ev["text"], ev
        r = await status_has(platform, "journal.head_not_signed")
        assert "afgeknipt" in r["text"], r  # the site's language
        _, got = await health_json(sim)
        assert reason(got, "journal.head_not_signed") is not None, got
        blocker.rmdir()
        await platform.wait_for(
            warned("journal.head_not_signed", kind="health.cleared"), after_seq=mark, timeout=30
        )
        _, got = await health_json(sim)
        assert reason(got, "journal.head_not_signed") is None, got
