"""The unit's ExecStart, run the way systemd runs it (Type=notify, WatchdogSec), without systemd."""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import sys
from pathlib import Path

import pytest

from simulators.broker import MosquittoBroker
from simulators.site import DeviceSpec, Org, SimSite
from tests.sdnotify import NotifyListener

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "lockgw.service"

pytestmark = pytest.mark.slow


def exec_start(config: Path) -> list[str]:
    """The unit's ExecStart with this checkout's venv and ``config`` in place of /usr/bin
    (where the Debian package links it) and /etc."""
    line = next(ln for ln in UNIT.read_text().splitlines() if ln.startswith("ExecStart="))
    argv = shlex.split(line.removeprefix("ExecStart="))
    assert argv[0] == "/usr/bin/lockgw", "the Debian package links the program there"
    argv[0] = str(Path(sys.executable).parent / "lockgw")
    return [str(config) if a == "/etc/lockgw/lockgw.toml" else a for a in argv]


async def test_exec_start_notifies_ready_pings_watchdog_and_stops_in_order(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    listener = NotifyListener(tmp_path)
    lock = DeviceSpec("front-lock", "front", "lock", "carelock-lock")
    async with SimSite(tmp_path / "site", devices=[lock]) as site:
        site.add_org(Org("org-a", "A", ("verzorgende",), ("planned",)))
        config = site.write_config(broker.url)
        await site.start_devices()
        await site.pair_all()
        env = {
            "NOTIFY_SOCKET": str(listener.path),
            "WATCHDOG_USEC": "1000000",  # WatchdogSec=1: pings every 0.5 s
            "PYTHONUNBUFFERED": "1",
        }
        argv = exec_start(config)
        proc = await asyncio.create_subprocess_exec(
            *argv, env={**os.environ, **env}, cwd=site.dir,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            ready = await listener.wait_for("READY=1", timeout=60)
            assert "STATUS=" in ready or any("STATUS=" in m for m in listener.messages)
            # READY means the phone link is up: a phone can connect right now
            await site.wait_port(site.phone_port, "phone link", timeout=1)
            for _ in range(3):  # fresh pings keep coming, each within WatchdogSec
                listener.messages = [m for m in listener.messages if "WATCHDOG=1" not in m]
                await listener.wait_for("WATCHDOG=1", timeout=5)
            proc.send_signal(signal.SIGHUP)
            await listener.wait_for("RELOADING=1", timeout=10)
            proc.send_signal(signal.SIGTERM)
            await listener.wait_for("STOPPING=1", timeout=10)
            async with asyncio.timeout(20):
                code = await proc.wait()
            assert code == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            listener.close()


def _unit_values(key: str) -> list[str]:
    return [
        ln.split("=", 1)[1].strip()
        for ln in UNIT.read_text().splitlines()
        if ln.startswith(f"{key}=")
    ]


def test_timeout_stop_sec_exceeds_the_stop_budget() -> None:
    """systemd must not SIGKILL an orderly stop (docs/install.md, "One stop deadline"):
    TimeoutStopSec exceeds the gateway's stop budget for the default device timeout and
    for every one up to 10 s, as the guide says."""
    from gateway.app import stop_budget
    from gateway.config import PhoneLinkConfig

    (value,) = _unit_values("TimeoutStopSec")
    limit = float(value)
    assert stop_budget(PhoneLinkConfig().device_timeout) < limit
    assert stop_budget(10.0) < limit
    assert stop_budget(11.0) >= limit  # the guide's "up to 10 s" is the real edge


async def test_a_config_error_exits_78_which_the_unit_does_not_restart(tmp_path: Path) -> None:
    """``lockgw run`` with a broken config (the unit's ExecStart) says what is wrong, one
    problem a line and no traceback, and exits with EX_CONFIG, which the unit lists in
    RestartPreventExitStatus: systemd does not restart it into the same error."""
    assert "78" in " ".join(_unit_values("RestartPreventExitStatus")).split()
    assert _unit_values("Restart") == ["always"]
    (tmp_path / "data").write_text("a file where the data directory should be")
    config = tmp_path / "lockgw.toml"
    config.write_text(
        '[site]\nid = "site-1"\ndata_dir = "data"\n[phone_link]\nloopback = "127.0.0.1:99999"\n'
        '[access]\nskew_secs = 5\n'
    )
    proc = await asyncio.create_subprocess_exec(
        *exec_start(config), cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    text = err.decode()
    assert proc.returncode == 78, text
    assert "Traceback" not in text + out.decode(), text
    assert "99999" in text and "skew_secs" in text, text
    # the data directory is checked once the rest is right
    config.write_text('[site]\nid = "site-1"\ndata_dir = "data"\n')
    proc = await asyncio.create_subprocess_exec(
        *exec_start(config), cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode == 78, err
    assert "not a directory" in err.decode() and "Traceback" not in err.decode()
