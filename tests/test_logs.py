"""Logging the Linux way (gateway/logs.py): journald priorities when stdout is the journal,
the standard library's records (bleak, paho, asyncio) in the same JSON pipeline, and no
key material from a library's free text. In subprocesses: the set-up is per process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import BinaryIO

import pytest

from simulators.broker import MosquittoBroker
from simulators.site import SimSite

ROOT = Path(__file__).resolve().parent.parent

SNIPPET = """
import asyncio, logging, os, structlog
from gateway.logs import configure_logging
configure_logging("debug")
log = structlog.get_logger("lockgw.test")
log.debug("ours.debug")
log.info("ours.info", device="front-lock")
log.warning("ours.warning")
log.error("ours.error")
logging.getLogger("bleak.backends.bluezdbus.client").info(
    "received %s", b"\\x01\\x02\\x03\\x04\\x05\\x06\\x07\\x08\\x09\\x0a\\x0b\\x0c\\x0d\\x0e\\x0f\\x10")
logging.getLogger("mqtt").warning("sent token %s", os.environ["T_TOKEN"])
logging.getLogger("mqtt").debug("nonce %s", os.environ["T_NONCE"])
try:
    raise RuntimeError("boom")
except RuntimeError:
    logging.getLogger("asyncio").exception("Task exception was never retrieved")
logging.getLogger("dbus_fast.message_bus").critical("bus gone")
logging.getLogger("bleak").warning("loaded %s", "/usr/lib/python3.11/site-packages/bleak/backends/bluezdbus/manager.py")
"""
TOKEN = "2D3p6m9Xq0vYtFz8kR4sN7cL1bQwE5aU"  # looks like a base64url token
NONCE = "9f86d081884c7d659a2feaa0c55ad015"  # 16 bytes in hex


def _run(env: dict[str, str], out: Path) -> list[str]:
    with open(out, "w") as f:
        st = os.fstat(f.fileno())
        env = {**os.environ, **env, "T_TOKEN": TOKEN, "T_NONCE": NONCE}
        if env.get("JOURNAL_STREAM") == "this":
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        subprocess.run(
            [sys.executable, "-c", SNIPPET],
            stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT, check=True, timeout=60,
        )
    return out.read_text().splitlines()


def test_under_the_journal_every_line_carries_its_priority(tmp_path: Path) -> None:
    lines = _run({"JOURNAL_STREAM": "this"}, tmp_path / "journal.txt")
    prios: dict[str, int] = {}
    for line in lines:
        assert line[0] == "<" and line[2] == ">", line
        record = json.loads(line[3:])  # one JSON object per line, traceback included
        prios[record["event"]] = int(line[1])
    assert prios["ours.debug"] == 7 and prios["ours.info"] == 6
    assert prios["ours.warning"] == 4 and prios["ours.error"] == 3
    assert prios["Task exception was never retrieved"] == 3
    assert prios["bus gone"] == 2


def test_library_records_join_our_pipeline_without_key_material(tmp_path: Path) -> None:
    lines = _run({}, tmp_path / "plain.txt")
    records = [json.loads(line) for line in lines]  # no prefixes: stdout is not the journal
    by_event = {r["event"]: r for r in records}
    assert by_event["ours.info"]["device"] == "front-lock"
    bleak = next(r for r in records if r.get("logger", "").startswith("bleak"))
    assert bleak["level"] == "info" and "hidden" in bleak["event"] and "\\x0f" not in bleak["event"]
    crashed = by_event["Task exception was never retrieved"]
    assert crashed["logger"] == "asyncio" and "RuntimeError: boom" in crashed["exception"]
    assert all("timestamp" in r and "level" in r for r in records)
    text = "\n".join(lines)
    assert TOKEN not in text and NONCE not in text
    assert "sent token <32 chars hidden>" in text
    assert "/usr/lib/python3.11/site-packages/bleak/backends/bluezdbus/manager.py" in text


def test_a_redirected_stdout_under_systemd_gets_no_prefixes(tmp_path: Path) -> None:
    """JOURNAL_STREAM inherited, but stdout is a file now (``lockgw run > f``)."""
    lines = _run({"JOURNAL_STREAM": "1:1"}, tmp_path / "file.txt")
    assert lines and all(line.startswith("{") for line in lines)


def _journal(path: Path) -> tuple[BinaryIO, str]:
    """A file standing in for the journal's stream, and its JOURNAL_STREAM value."""
    f = path.open("ab")
    st = os.fstat(f.fileno())
    return f, f"{st.st_dev}:{st.st_ino}"


@pytest.mark.slow
async def test_the_daemon_logs_with_priorities_when_systemd_gives_it_the_journal(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """``lockgw run`` as the unit starts it: stdout is the journal's stream. Its lines and
    paho's carry priorities; a broker outage is a warning (<4>), paho's packets debug (<7>)."""
    async with SimSite(tmp_path, devices=[]) as site:
        site.write_config(broker.url)
        log = tmp_path / "journal.txt"
        f, stream = _journal(log)
        with f:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway", "run", "--config", str(site.config),
                "--log-level", "debug",
                stdout=f, stderr=subprocess.STDOUT, cwd=tmp_path,
                env={**os.environ, "JOURNAL_STREAM": stream},
            )
        try:
            await site.wait_port(site.phone_port, "the gateway's phone link", timeout=30)
            await broker.stop()
            for _ in range(150):
                if '"mqtt.disconnected"' in log.read_text():
                    break
                await asyncio.sleep(0.2)
        finally:
            proc.terminate()
            await proc.wait()
            await broker.start()
        lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
        assert lines and all(ln[:1] == "<" and ln[2:3] == ">" for ln in lines), lines[:5]
        records = [(ln[1], json.loads(ln[3:])) for ln in lines]
        events = {r["event"]: prio for prio, r in records}
        assert events["gateway.ready"] == "6" and events["mqtt.disconnected"] == "4"
        # every line's priority is its level's, paho's own included (its packets at debug,
        # <7>; its complaints when the broker went away at their levels)
        wanted = {"debug": "7", "info": "6", "warning": "4", "error": "3", "critical": "2"}
        assert all(prio == wanted[r["level"]] for prio, r in records), records[:5]
        paho = [r for _, r in records if r.get("logger") == "paho.mqtt"]
        assert any("CONNECT" in r["event"] and r["level"] == "debug" for r in paho), paho[:3]
