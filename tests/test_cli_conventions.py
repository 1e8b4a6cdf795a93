"""The command line behaves as Linux tools do: ``--version``, a default config
(``$LOCKGW_CONFIG``, else /etc/lockgw/lockgw.toml), usage errors exit 2, and ``lockgw pair``
asks the installer to compare the pairing code (``--yes`` for scripts). As processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import re
import sys
from pathlib import Path

import pytest

from gateway.cli._conventions import DEFAULT_CONFIG
from tests.simprocs import SimProcess, press, shown_code
from tests.test_devices_e2e import write_config

ROOT = Path(__file__).resolve().parent.parent


async def _run(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


def _installed_here() -> bool:
    """A hub with lockgw installed has the default config file."""
    return Path(DEFAULT_CONFIG).exists()


LOCKGW = (sys.executable, "-m", "gateway")
SIM = (sys.executable, "-m", "simulators.cli")


async def test_both_commands_say_their_version() -> None:
    from importlib.metadata import version

    for argv, name in ((LOCKGW, "lockgw"), (SIM, "lockgw-sim")):
        code, out, _ = await _run(*argv, "--version")
        assert (code, out.strip()) == (0, f"{name} {version('lockgw')}")


async def test_usage_errors_exit_2() -> None:
    for argv in (
        (*LOCKGW,),
        (*LOCKGW, "--no-such-option"),
        (*LOCKGW, "no-such-command"),
        (*LOCKGW, "token", "issue", "--key", "k"),
        (*SIM, "platform", "watch"),
    ):
        code, _, err = await _run(*argv)
        assert code == 2 and "usage:" in err, (argv, code, err)


async def test_the_config_defaults_to_lockgw_config_then_etc(tmp_path: Path) -> None:
    cfg = tmp_path / "site.toml"
    cfg.write_text('[site]\nid = "site-conv"\ndata_dir = "data"\n')
    code, out, err = await _run(*LOCKGW, "check-config", env={"LOCKGW_CONFIG": str(cfg)})
    assert code == 0 and "site-conv" in out, err
    env = {k: v for k, v in os.environ.items() if k != "LOCKGW_CONFIG"}
    proc = await asyncio.create_subprocess_exec(
        *LOCKGW, "devices", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    _, err_b = await proc.communicate()
    if not _installed_here():
        assert proc.returncode != 0 and DEFAULT_CONFIG in err_b.decode(), err_b


# -- lockgw pair: compare the code ----------------------------------------------------------
async def _pair_at_a_terminal(
    cfg: Path, device: str, answer: str, sim: SimProcess
) -> tuple[int, str]:
    """``lockgw pair`` with its stdin on a pseudo-terminal, as an installer runs it: they
    confirm the code on the device when it shows the one lockgw pair printed, then answer."""
    master, slave = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        *LOCKGW, "pair", "--config", str(cfg), device,
        stdin=slave, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    os.close(slave)
    assert proc.stdout is not None
    seen = b""
    try:
        async with asyncio.timeout(60):
            pressed = False
            while b"[y/N]" not in seen:
                chunk = await proc.stdout.read(1024)
                assert chunk, seen.decode()
                seen += chunk
                said = re.search(rb"Pairing code: (\d{6})\n", seen)
                if said and not pressed and b"Waiting for the device" in seen:
                    assert await shown_code(sim) == said[1].decode()
                    await press(sim, "confirm")
                    pressed = True
            os.write(master, answer.encode() + b"\n")
            seen += await proc.stdout.read()
            await proc.wait()
    finally:
        with contextlib.suppress(OSError):
            os.close(master)
    return proc.returncode or 0, seen.decode()


@pytest.mark.slow
async def test_pair_shows_the_code_and_keeps_the_keys_only_when_the_installer_confirms(
    tmp_path: Path,
) -> None:
    async with SimProcess("lock", pairing=True) as lock, SimProcess("keysafe") as keysafe:
        cfg = write_config(tmp_path, lock, keysafe)
        keys = tmp_path / "data" / "devices" / "keys" / "front-lock.json"

        code, out = await _pair_at_a_terminal(cfg, "front-lock", "n", lock)
        assert code == 1, out
        assert "Pairing code: " in out and "Did the device show the same code? [y/N]" in out
        assert "not paired" in out and "thrown away" in out
        assert not keys.exists()
        # the device was asked to forget the pairing it had confirmed
        assert (await lock.control("state"))["paired_centrals"] == 0

        await lock.control("pairing", "on")
        code, out = await _pair_at_a_terminal(cfg, "front-lock", "y", lock)
        assert code == 0 and "Paired front-lock" in out, out
        assert keys.exists()

        # a script without a terminal must say --yes: nothing changes without it
        await lock.control("pairing", "on")
        before = keys.read_bytes()
        code, out, err = await _run(*LOCKGW, "pair", "--config", str(cfg), "front-lock")
        assert code == 1 and "already paired" in err, err
        pairing = asyncio.create_task(
            _run(*LOCKGW, "pair", "--config", str(cfg), "front-lock", "--yes")
        )
        while not pairing.done() and (shown := await shown_code(lock)) is None:
            await asyncio.wait({pairing}, timeout=0.05)
        await press(lock, "confirm")
        code, out, err = await pairing
        assert code == 0 and f"Pairing code: {shown}" in out and "--yes" in out, err
        assert keys.read_bytes() != before  # paired again: new keys

        await lock.control("pairing", "on")
        keys.unlink()
        code, out, err = await _run(*LOCKGW, "pair", "--config", str(cfg), "front-lock")
        assert code == 1 and "no terminal" in err and not keys.exists(), err
