"""Health evaluation: every check says what is wrong in words; the metrics endpoint serves text."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

from gateway.health import DeviceHealth, HealthServer, Snapshot, read_snapshot
from gateway.health import evaluate as evaluate_reasons
from protocols.health import HealthReason


def evaluate(data_dir: Path, s: Snapshot | None, now: float | None = None, **kw: object) -> list[str]:
    """The reasons' texts (the tests of their words)."""
    return [r.text for r in evaluate_reasons(data_dir, s, now, **kw)]  # type: ignore[arg-type]


def reasons(data_dir: Path, s: Snapshot | None, now: float | None = None) -> list[HealthReason]:
    return evaluate_reasons(data_dir, s, now)


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
    assert out.startswith("lockgw: waarschuwing, 1 probleem") and "broker: niet verbonden" in out
    assert await main(["health", "--config", str(cfg), "--lang", "en"]) == 1
    assert capsys.readouterr().out.startswith("lockgw: warning, 1 problem\n")
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


# -- the present state, not a stale snapshot ---------------------------------------------------


def test_a_snapshot_left_over_by_a_process_that_is_gone_says_not_running(tmp_path: Path) -> None:
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    (r,) = reasons(tmp_path, snap(pid=int(gone.stdout), written_at=time.time() - 600))
    assert (r.code, r.level) == ("daemon.not_running", "unhealthy")
    assert "left over from process" in r.text


def test_an_old_snapshot_of_a_live_process_that_does_not_answer_cannot_be_known(
    tmp_path: Path,
) -> None:
    import os

    old = snap(pid=os.getpid(), written_at=time.time() - 60)
    (r,) = reasons(tmp_path, old)
    assert (r.code, r.level) == ("daemon.unknown", "unhealthy")
    assert "cannot be known" in r.text
    # the same snapshot asked of the daemon itself is its present state: nothing wrong
    assert evaluate_reasons(tmp_path, old, live=True) == []


def test_a_starting_daemon_says_so_and_nothing_older(tmp_path: Path) -> None:
    import os

    starting = Snapshot(written_at=time.time(), interval=5, pid=os.getpid(), version="t",
                        started_at=time.time() - 3, phase="starting")  # fmt: skip
    (r,) = reasons(tmp_path, starting)
    assert (r.code, r.level) == ("daemon.starting", "unhealthy")
    assert "starting for 3 s" in r.text


async def test_health_asks_the_daemon_when_its_file_is_old(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The file could not be rewritten (a full disk): ``lockgw health`` asks the daemon
    over its socket and tells the present state, not the file's."""
    import errno
    import json
    import os

    from gateway.cli import main

    cfg = tmp_path / "lockgw.toml"
    cfg.write_text('[site]\nid = "s"\ndata_dir = "."\n')
    # what a full disk leaves: the file of long ago, with the broker still connected
    (tmp_path / "health.json").write_text(snap(pid=os.getpid(), written_at=1.0).model_dump_json())

    class FullDisk(HealthServer):
        def _write(self, s: Snapshot) -> None:
            self.write_failures += 1
            raise OSError(errno.ENOSPC, "No space left on device")

    present = lambda: snap(pid=os.getpid(), broker_connected=False)  # noqa: E731
    async with FullDisk(tmp_path, present, interval=3600):
        assert await main(["health", "--config", str(cfg), "--json"]) == 1
        got = json.loads(capsys.readouterr().out.splitlines()[-1])  # after the daemon's log
    assert [r["code"] for r in got["reasons"]] == ["broker.disconnected"], got
    assert got["health"] == "warning" and got["snapshot"]["write_failures"] >= 1
    # the daemon gone, the same file: its state cannot be known
    assert await main(["health", "--config", str(cfg), "--json"]) == 1
    got = json.loads(capsys.readouterr().out)
    assert [r["code"] for r in got["reasons"]] == ["daemon.unknown"], got


async def test_the_daemons_metrics_carry_the_reasons_and_revocation_freshness(tmp_path: Path) -> None:
    from gateway.health import IssuerHealth
    from simulators.broker import free_port

    port = free_port()
    stale = snap(issuers=[IssuerHealth(id="org-west", name="Thuiszorg West", max_age=3600,
                                       seq=4, age=7200.0, stale=True)])  # fmt: skip
    async with HealthServer(tmp_path, lambda: stale, interval=3600, metrics=f"127.0.0.1:{port}"):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        body = (await reader.read()).decode()
        writer.close()
        await writer.wait_closed()
    assert "lockgw_health 2\n" in body, body
    assert 'lockgw_health_reason{code="revocation.stale",level="degraded",subject="org-west"} 1' in body
    assert 'lockgw_revocation_age_seconds{issuer="org-west"} 7200' in body
    assert 'lockgw_revocation_stale{issuer="org-west"} 1' in body


def test_ageing_words_change_by_the_minute_or_hour_not_at_every_look(tmp_path: Path) -> None:
    """The retained status is sent again when a reason's words change: durations in them
    are whole minutes, or whole hours from an hour up."""
    from gateway.health import IssuerHealth

    def words(age: float) -> str:
        s = snap(issuers=[IssuerHealth(id="o", name="Org", max_age=4 * 3600, seq=1, age=age)])
        (r,) = reasons(tmp_path, s)
        return r.text

    assert words(3 * 3600 + 10 * 60) == words(3 * 3600 + 10 * 60 + 7)
    assert "goes stale in 50 min" in words(3 * 3600 + 10 * 60 + 7)
    stale = snap(issuers=[IssuerHealth(id="o", name="Org", max_age=3600, seq=1, age=7322.0,
                                       stale=True)])  # fmt: skip
    (r,) = reasons(tmp_path, stale)
    assert "is 2 h old (at most 1 h allowed)" in r.text, r.text
