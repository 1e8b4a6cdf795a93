"""``lockgw audit show | verify | export`` on a real journal file."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.journal import Journal, journal_path
from protocols.events import (
    AccessDecisionEvent,
    BatteryEvent,
    Channel,
    VisitEvent,
)

SITE = "site-audit"


@pytest.fixture
async def config(tmp_path: Path) -> Path:
    cfg = tmp_path / "lockgw.toml"
    cfg.write_text(f'[site]\nid = "{SITE}"\ntimezone = "Europe/Amsterdam"\ndata_dir = "data"\n')
    async with Journal(journal_path(tmp_path / "data"), SITE, retention_days=30) as j:
        granted = await j.emit(
            AccessDecisionEvent(
                type="access.granted",
                door="front",
                device="front-lock",
                iss="org-west",
                sub="carer-17",
                role="verzorgende",
                purpose="planned",
                action="unlock",
                channel=Channel.PHONE,
                reason="ok",
            )
        )
        await j.emit(
            BatteryEvent(device="front-lock", door="front", level=15, low=True, critical=False)
        )
        await j.emit(
            AccessDecisionEvent(
                type="access.denied",
                door="back",
                iss="org-west",
                sub="carer-3",
                role="verzorgende",
                purpose="planned",
                action="unlock",
                channel=Channel.PHONE,
                reason="outside_window",
            )
        )
        await j.emit(
            VisitEvent(
                type="visit.ended",
                visit=granted.id,
                door="front",
                sub="carer-17",
                role="verzorgende",
                iss="org-west",
                duration_s=1380,
                relocked=True,
            )
        )
    return cfg


async def test_show_tells_the_resident_who_when_which_door_why(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await main(["audit", "show", "--config", str(config)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3  # the battery reading is not what a resident asks about
    assert (
        "front door: OPENED (unlock) for verzorgende carer-17 of org-west, planned care, by phone"
        in out[0]
    )
    assert (
        "back door: REFUSED for verzorgende carer-3 of org-west: outside the agreed times" in out[1]
    )
    assert (
        "visit by verzorgende carer-17 of org-west ended after 23 min (door locked again)" in out[2]
    )


async def test_show_filters_and_json(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert await main(["audit", "show", "--config", str(config), "--door", "back", "--json"]) == 0
    events = json.loads(capsys.readouterr().out)
    assert [(e["seq"], e["type"], e["reason"]) for e in events] == [
        (3, "access.denied", "outside_window")
    ]
    assert await main(["audit", "show", "--config", str(config), "--all", "--limit", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert await main(["audit", "show", "--config", str(config), "--since", "2099-01-01"]) == 0
    assert "No entries" in capsys.readouterr().out


async def test_verify_is_0_when_intact_and_1_naming_the_first_broken_link(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await main(["audit", "verify", "--config", str(config)]) == 0
    assert "intact: seq 1..4" in capsys.readouterr().out
    path = journal_path(tmp_path / "data")
    with sqlite3.connect(path) as db:
        db.execute(
            "UPDATE events SET payload = replace(payload, 'carer-3', 'carer-4') WHERE seq = 3"
        )
    assert await main(["audit", "verify", "--journal", str(path)]) == 1
    assert "BROKEN at seq 3" in capsys.readouterr().out


async def test_export_csv_and_json_hold_every_event(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await main(["audit", "export", "--config", str(config), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["seq"] for r in rows] == ["1", "2", "3", "4"]
    assert rows[0]["sub"] == "carer-17" and rows[2]["reason"] == "outside_window"
    assert json.loads(rows[1]["details"])["level"] == 15
    out = tmp_path / "export.json"
    assert (
        await main(
            ["audit", "export", "--config", str(config), "--format", "json", "--out", str(out)]
        )
        == 0
    )
    assert [e["seq"] for e in json.loads(out.read_text())] == [1, 2, 3, 4]


async def test_without_a_journal_the_error_says_what_to_give(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await main(["audit", "verify"]) == 1
    assert "--config" in capsys.readouterr().err
    assert await main(["audit", "show", "--journal", str(tmp_path / "none.sqlite3")]) == 1
    assert "no journal at" in capsys.readouterr().err
