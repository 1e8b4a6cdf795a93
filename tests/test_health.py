"""Health evaluation: every check says what is wrong in words; the metrics endpoint serves text."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

from gateway.health import DeviceHealth, HealthServer, Snapshot, evaluate, read_snapshot


def snap(**kw: object) -> Snapshot:
    now = time.time()
    base: dict[str, object] = dict(
        written_at=now, interval=5.0, pid=1, version="t", started_at=now - 60,
        clock_trusted=True, time_floor=now - 10, broker_connected=True, journal_ok=True,
        journal_failures=0, last_seq=10, backlog=0,
        devices=[DeviceHealth(id="front-lock", door="front", online=True, last_contact=now,
                              battery=80, health_interval=60)],
    )
    base.update(kw)
    return Snapshot.model_validate(base)


def test_a_healthy_gateway_has_no_problems(tmp_path: Path) -> None:
    assert evaluate(tmp_path, snap()) == []


def test_no_snapshot_means_the_daemon_is_not_running(tmp_path: Path) -> None:
    (problem,) = evaluate(tmp_path, None)
    assert "is lockgw running" in problem


def test_every_check_reports_in_words(tmp_path: Path) -> None:
    now = time.time()
    bad = snap(
        written_at=now - 60, clock_trusted=False, broker_connected=False, journal_ok=False,
        journal_failures=3, backlog=20_000,
        devices=[DeviceHealth(id="front-lock", door="front", online=False, last_contact=None,
                              battery=5, health_interval=60)],
    )
    text = "\n".join(evaluate(tmp_path, bad, now))
    for word in ("stuck", "time floor", "broker", "cannot write", "not yet published",
                 "offline", "battery critical"):
        assert word in text


def test_state_fallbacks_broker_config_and_offline_reasons_are_said_in_words(
    tmp_path: Path,
) -> None:
    from gateway.health import StateNotice

    now = time.time()
    notices = [
        StateNotice(file="time_floor.json", problem="missing", at=now - 30, in_force=False,
                    fallback="the time floor was taken from the journal's newest event"),
        StateNotice(file="revocations.json", problem="damaged", at=now - 30, in_force=True,
                    kept_as="/d/access/revocations.json.corrupt", issuers=["org-west"],
                    fallback="planned care of org-west is refused (revocation_stale)"),
    ]
    bad = snap(
        state=notices, state_write_failures=2, broker_problem="mqtt.tls.ca_file: ca.pem: not found",
        devices=[DeviceHealth(id="front-lock", door="front", online=False, last_contact=None,
                              battery=80, health_interval=60,
                              error="pairing keys k.json: damaged; pair the device again")],
    )
    problems = evaluate(tmp_path, bad, now)
    text = "\n".join(problems)
    assert "state: time_floor.json was missing at start" in text
    assert "state: revocations.json was damaged at start" in text and ".corrupt" in text
    assert "org-west" in text and "2 write(s)" in text
    assert "broker: not started" in text and "ca.pem" in text
    assert "front-lock (front): offline: pairing keys" in text
    assert not any("not connected" in p for p in problems)  # the config problem says why
    from protocols.i18n import language

    dutch = "\n".join(evaluate(tmp_path, bad, now, lang=language("nl")))
    assert "toestand: revocations.json was beschadigd" in dutch and "org-west" in dutch


async def test_the_daemon_writes_a_snapshot_and_serves_metrics(tmp_path: Path) -> None:
    from simulators.broker import free_port

    port = free_port()
    server = HealthServer(tmp_path, snap, interval=0.05, metrics=f"127.0.0.1:{port}")
    async with server:
        task = asyncio.create_task(server.run())
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        body = await reader.read()
        writer.close()
        await writer.wait_closed()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert b"200 OK" in body and b'lockgw_device_battery_percent{device="front-lock",door="front"} 80' in body
    got = read_snapshot(tmp_path)
    assert got is not None and got.last_seq == 10


def test_every_check_reports_in_dutch_too(tmp_path: Path) -> None:
    from protocols.i18n import language

    now = time.time()
    bad = snap(
        written_at=now - 60, clock_trusted=False, broker_connected=False,
        devices=[DeviceHealth(id="front-lock", door="front", online=False, last_contact=None,
                              battery=5, health_interval=60)],
    )  # fmt: skip
    text = "\n".join(evaluate(tmp_path, bad, now, lang=language("nl")))
    for words in ("vast te zitten", "tijdvloer", "niet verbonden", "niet bereikbaar",
                  "batterij bijna leeg (5 %)"):  # fmt: skip
        assert words in text, text


async def test_health_speaks_the_sites_language_and_json_stays_english(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli import main

    cfg = tmp_path / "lockgw.toml"
    cfg.write_text('[site]\nid = "s"\ndata_dir = "."\n')
    (tmp_path / "health.json").write_text(snap(broker_connected=False).model_dump_json())
    assert await main(["health", "--config", str(cfg)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("lockgw: 1 probleem") and "broker: niet verbonden" in out
    assert await main(["health", "--config", str(cfg), "--lang", "en"]) == 1
    assert capsys.readouterr().out.startswith("lockgw: 1 problem\n")
    assert await main(["health", "--config", str(cfg), "--json"]) == 1
    assert "broker: not connected" in capsys.readouterr().out


def test_the_journal_fallback_and_nothing_recorded_are_told_apart(tmp_path: Path) -> None:
    waiting = snap(journal_ok=False, journal_recording="fallback", journal_held=12,
                   journal_problem="the disk is full")
    (problem,) = evaluate(tmp_path, waiting)
    assert "12 events wait in its fallback file" in problem and "the disk is full" in problem
    nothing = snap(journal_ok=False, journal_recording="unrecorded", journal_held=5,
                   journal_not_durable=5, journal_problem="the disk is full")
    (problem,) = evaluate(tmp_path, nothing)
    assert problem.startswith("journal: NOTHING IS RECORDED") and "5 events" in problem
    assert "lost if the gateway stops" in problem
