"""Rosters through the real gateway: the platform publishes, ``lockgw run`` applies,
journals and decides — what the phone hears and what the platform receives."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_door_process import expect, home, west, windows_now

from simulators.broker import MosquittoBroker
from simulators.site import Carer

pytestmark = pytest.mark.slow


async def test_a_published_roster_is_applied_journaled_and_decides(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    inside, _ = windows_now()
    org = west()
    # site.max_people = 1 and access.roster_check = "refuse" (SimSite writes [site] itself)
    async with home(tmp_path, broker, [org], before_start=_max_people) as (sim, platform):
        anna = Carer("Anna", "c-7f31", org, "verzorgende")
        bram = Carer("Bram", "c-2a90", org, "verzorgende")
        chidi = Carer("Chidi", "c-55d2", org, "verzorgende")
        for c in (anna, bram, chidi):
            sim.issue(c, windows=inside)
        # no roster yet: nothing to check against
        ev = await expect(sim, platform, anna, "ok")
        assert ev["not_on_roster"] is False

        await platform.send_roster(org.id, sim.roster(org, 1, [anna, bram]))
        applied = await platform.wait_for(lambda e: e["type"] == "roster.applied")
        assert (applied["iss"], applied["list_seq"], applied["people"]) == (org.id, 1, 2)
        # pseudonyms only on the stream: the names stay on the hub
        assert applied["added"] == [
            {"sub": anna.sub, "role": "verzorgende"},
            {"sub": bram.sub, "role": "verzorgende"},
        ]
        assert "Anna" not in str(platform.checker.events)
        over = await platform.wait_for(lambda e: e["type"] == "roster.over_limit")
        assert (over["people"], over["limit"]) == (2, 1)

        ev = await expect(sim, platform, anna, "ok")
        assert ev["not_on_roster"] is False
        await expect(sim, platform, chidi, "not_on_roster")  # roster_check = "refuse"

        # a roster change: Bram leaves, Chidi joins; a replayed old roster is ignored
        await platform.send_roster(org.id, sim.roster(org, 2, [anna, chidi]))
        second = await platform.wait_for(
            lambda e: e["type"] == "roster.applied" and e["list_seq"] == 2
        )
        assert [p["sub"] for p in second["added"]] == [chidi.sub]
        assert [p["sub"] for p in second["removed"]] == [bram.sub]
        await platform.send_roster(org.id, sim.roster(org, 1, [anna, bram]))
        await expect(sim, platform, chidi, "ok")
        await expect(sim, platform, bram, "not_on_roster")
        assert not [
            e for e in platform.checker.events if e["type"] == "roster.applied" and e["list_seq"] == 1
        ][1:], "the replayed roster 1 was applied again"


def _max_people(sim: object) -> None:
    from simulators.site import SimSite

    assert isinstance(sim, SimSite)
    text = sim.config.read_text()
    text = text.replace('data_dir = "data"\n', 'data_dir = "data"\nmax_people = 1\n', 1)
    text = text.replace("\n[mqtt]\n", '\n[access]\nroster_check = "refuse"\n\n[mqtt]\n', 1)
    sim.config.write_text(text)
