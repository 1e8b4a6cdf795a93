"""``lockgw audit show | verify | export`` on a real journal file."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sqlite3
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.access.state import StateDir
from gateway.cli import main
from gateway.journal import Journal, journal_path
from gateway.keys import write_key_pair
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
            AccessDecisionEvent(
                type="access.granted",
                door="front",
                device="front-keysafe",
                iss="org-west",
                sub="carer-9",
                role="verzorgende",
                purpose="planned",
                action="open",
                channel=Channel.PHONE,
                reason="ok",
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
                duration_s=1385,
                relocked=True,
            )
        )
    return cfg


def entries(out: str) -> list[str]:
    """The event lines of audit show (under each day's heading), without their time."""
    return [line[12:] for line in out.splitlines() if line.startswith("  ")]


async def test_show_tells_the_resident_who_when_which_door_why_in_english(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await main(["audit", "show", "--config", str(config), "--lang", "en"]) == 0
    out = capsys.readouterr().out
    day = datetime.now(ZoneInfo("Europe/Amsterdam"))
    assert out.splitlines()[0] == f"{day:%A} {day.day} {day:%B} {day.year}"
    # the battery reading is not what a resident asks about
    assert entries(out) == [
        "Front door opened for care worker carer-17 (org-west) — planned care, by phone",
        "Back door not opened for care worker carer-3 (org-west): outside the agreed times",
        "Key safe opened for care worker carer-9 (org-west) — planned care, by phone",
        "Visit of care worker carer-17 (org-west) ended after 23 min 5 s — door locked again",
    ]


async def test_show_reads_naturally_in_dutch_with_the_rosters_names(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Dutch by default; people named as their organisation's roster named them (kept on
    the hub), the organisation by the name in the config, durations in minutes and seconds."""
    text = await asyncio.to_thread(config.read_text)
    await asyncio.to_thread(
        config.write_text,
        text + '[[issuers]]\nid = "org-west"\nname = "Thuiszorg West"\n'
        'public_key = "west.pub"\nroles = ["verzorgende"]\npurposes = ["planned"]\n'
        'doors = ["front", "back"]\n',
    )
    write_key_pair(tmp_path, "west")
    StateDir(tmp_path / "data" / "access").save(
        "names.json",
        {"v": 1, "issuers": {"org-west": {
            "carer-17": {"name": "Anna, verzorgende", "role": "verzorgende", "last_listed": 1.0},
        }}},
    )  # fmt: skip
    assert await main(["audit", "show", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith(("Maandag", "Dinsdag", "Woensdag", "Donderdag",
                                          "Vrijdag", "Zaterdag", "Zondag"))  # fmt: skip
    assert entries(out) == [
        "Voordeur geopend voor Anna, verzorgende (Thuiszorg West) — geplande zorg, met de telefoon",
        "Achterdeur niet geopend voor verzorgende carer-3 (Thuiszorg West): buiten de "
        "afgesproken tijden",
        "Sleutelkluis geopend voor verzorgende carer-9 (Thuiszorg West) — geplande zorg, met de "
        "telefoon",
        "Bezoek van Anna, verzorgende (Thuiszorg West) afgelopen na 23 min 5 s — deur weer op slot",
    ]
    assert "OPENED" not in out and "unlock" not in out


async def test_show_filters_and_json(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert await main(["audit", "show", "--config", str(config), "--door", "back", "--json"]) == 0
    events = json.loads(capsys.readouterr().out)
    assert [(e["seq"], e["type"], e["reason"]) for e in events] == [
        (3, "access.denied", "outside_window")
    ]
    assert await main(["audit", "show", "--config", str(config), "--all", "--limit", "2"]) == 0
    assert len(entries(capsys.readouterr().out)) == 2
    since = ["audit", "show", "--config", str(config), "--since", "2099-01-01"]
    assert await main([*since, "--lang", "en"]) == 0
    assert "No entries" in capsys.readouterr().out
    assert await main(since) == 0
    assert "Niets vastgelegd" in capsys.readouterr().out


async def test_verify_is_0_when_intact_and_1_naming_the_first_broken_link(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await main(["audit", "verify", "--config", str(config)]) == 0
    assert "intact: seq 1..5" in capsys.readouterr().out
    path = journal_path(tmp_path / "data")
    with sqlite3.connect(path) as db:
        db.execute(
            "UPDATE events SET payload = replace(payload, 'carer-3', 'carer-4') WHERE seq = 3"
        )
    assert await main(["audit", "verify", "--journal", str(path)]) == 1
    assert "BROKEN at seq 3" in capsys.readouterr().out


async def test_an_edited_filter_column_is_detected(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The door column (what ``audit show --door`` filters on) moved to another door: the
    row leaves that door's view, and verify names the row and the column. The same for
    the type and time columns (the resident's view and ``--since`` filter on them)."""
    path = journal_path(tmp_path / "data")
    show_back = ["audit", "show", "--config", str(config), "--door", "back", "--json"]
    with sqlite3.connect(path) as db:
        db.execute("UPDATE events SET door = 'front' WHERE seq = 3")
    assert await main(show_back) == 0
    assert json.loads(capsys.readouterr().out) == []  # hidden from the back door's view
    assert await main(["audit", "verify", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "BROKEN at seq 3: its door column differs from its chained payload" in out, out
    for column, value in (("type", "'battery'"), ("ts", "'2001-01-01T00:00:00.000Z'")):
        with sqlite3.connect(path) as db:
            db.execute("UPDATE events SET door = 'back' WHERE seq = 3")
            db.execute(f"UPDATE events SET {column} = {value} WHERE seq = 3")
        assert await main(["audit", "verify", "--config", str(config)]) == 1
        assert f"its {column} column differs" in capsys.readouterr().out
        with sqlite3.connect(path) as db:  # put back for the next column
            db.execute(
                f"UPDATE events SET {column} = json_extract(payload, '$.{column}') WHERE seq = 3"
            )
    assert await main(["audit", "verify", "--config", str(config)]) == 0


async def test_export_csv_and_json_hold_every_event(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await main(["audit", "export", "--config", str(config), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["seq"] for r in rows] == ["1", "2", "3", "4", "5"]
    assert rows[0]["sub"] == "carer-17" and rows[2]["reason"] == "outside_window"
    assert json.loads(rows[1]["details"])["level"] == 15
    out = tmp_path / "export.json"
    assert (
        await main(
            ["audit", "export", "--config", str(config), "--format", "json", "--out", str(out)]
        )
        == 0
    )
    assert [e["seq"] for e in json.loads(out.read_text())] == [1, 2, 3, 4, 5]


async def test_without_a_journal_the_error_says_what_to_give(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await main(["audit", "verify"]) == 1
    assert "--config" in capsys.readouterr().err
    assert await main(["audit", "show", "--journal", str(tmp_path / "none.sqlite3")]) == 1
    assert "no journal at" in capsys.readouterr().err
