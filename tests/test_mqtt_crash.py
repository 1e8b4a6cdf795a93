"""kill -9 of a real gateway process mid-stream: no event lost, none doubled after de-dup."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest
from _stream import Collector

from gateway.journal import Journal, journal_path
from gateway.mqtt import Topics
from simulators.broker import MosquittoBroker

SITE = "site-crash"


def write_config(tmp_path: Path, broker: MosquittoBroker) -> Path:
    cfg = tmp_path / "lockgw.toml"
    cfg.write_text(
        f'[site]\nid = "{SITE}"\ndata_dir = "{tmp_path / "data"}"\n\n'
        f'[mqtt]\nurl = "{broker.url}"\nreconnect_min = 0.05\nreconnect_max = 0.5\n'
    )
    return cfg


async def loadgen(cfg: Path, count: int) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.mqtt.loadgen",
        "--config",
        str(cfg),
        "--count",
        str(count),
        "--rate",
        "2000",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.slow
async def test_kill_9_mid_stream_then_restart_every_seq_exactly_once_no_gap(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path, broker)
    async with (
        Collector(broker.host, broker.port, Topics.events(SITE)) as sub,
        Collector(broker.host, broker.port, Topics.status(SITE)) as status,
    ):
        proc = await loadgen(cfg, 10_000)
        assert proc.stdout is not None
        acknowledged = 0  # the highest seq whose emit() had returned before the kill
        try:
            async with asyncio.timeout(60):  # kill it once 3,000 of 10,000 are journaled
                while acknowledged < 3000:
                    line = await proc.stdout.readline()
                    assert line, "loadgen ended before it was killed"
                    if line.startswith(b"{"):  # the rest are log lines
                        acknowledged = max(acknowledged, json.loads(line).get("journaled_seq", 0))
            await sub.wait_seq(1, timeout=30)  # and the stream is flowing
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGKILL)
            await proc.wait()
        assert proc.returncode == -signal.SIGKILL
        # the broker publishes the Last Will for the dead connection
        await status.wait(
            lambda: (
                json.loads(status.retained.get(Topics.status(SITE), b"{}")).get("state")
                == "offline"
            ),
            timeout=30,
        )
        async with Journal(
            journal_path(tmp_path / "data"), SITE, retention_days=30, read_only=True
        ) as j:
            survived = j.last_seq
            assert await j.verify() is None
        assert acknowledged <= survived < 10_000  # killed mid-stream; no acknowledged loss

        proc = await loadgen(cfg, 1_000)
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, out
        final = json.loads(out.decode().strip().splitlines()[-1])
        assert final["last_seq"] == survived + 1_000
        await sub.wait_seq(final["last_seq"], timeout=60)
    sub.assert_complete(final["last_seq"])
