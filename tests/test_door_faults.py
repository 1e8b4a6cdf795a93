"""Fault injection on the door path, with real processes: ``lockgw run``, a ``lockgw-sim
lock``, mosquitto and phones (as in tests/test_door_process.py).

Each test breaks one thing the door depends on — the journal's disk, the journal's
file, its writer process, the lock's answer, the broker — and checks what the phone
hears, what is durably recorded, what the platform receives (eventually, in order,
without a gap, with the id the phone heard), what health says and what the lock ends
up doing.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_door_process import home, lock_state, west, windows_now

from protocols.control import Command
from simulators.broker import MosquittoBroker
from simulators.site import Carer, SimSite

pytestmark = pytest.mark.slow

Event = dict[str, Any]


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[None]:
    """A tmpfs of ``size`` mounted at ``path`` (the home's data directory): a disk that
    can really fill up. Skips the test where mounting is not allowed (not root)."""
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def fill(directory: Path) -> Path:
    """Write a file into ``directory`` until its disk is full."""
    filler = directory / "filler"
    chunk = b"\xff" * 65536
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    break
                chunk = chunk[: len(chunk) // 2]
    finally:
        os.close(fd)
    return filler


async def done(value: bool) -> bool:
    return value


async def lock_state_is(sim: SimSite, state: str) -> bool:
    return await lock_state(sim) == state


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    """Wait until ``check()`` is true (the test fails at ``timeout``)."""
    async with asyncio.timeout(timeout):
        while not await check():  # noqa: ASYNC110 - another process: polling is all there is
            await asyncio.sleep(0.05)


def log_lines(sim_dir: Path, event: str) -> list[dict[str, Any]]:
    out = []
    for line in (sim_dir / "gateway.log").read_text(errors="replace").splitlines():
        if f'"{event}"' in line:
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


async def test_full_disk_the_phone_still_hears_its_answer(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """The data disk fills up while the gateway runs: every carer at the door still hears
    ``granted`` and the lock opens (care first), and each attempt that the journal could
    not take leaves who, which door and what happened behind. (It raised ``TypeError``
    in the door's own failure path: the lock opened, the phone heard nothing, and nothing
    said who came in; a signed remote command failed the same way.)"""
    inside, _ = windows_now()
    org = west()
    data = tmp_path / "home" / "data"
    with small_disk(data, "3m"):
        async with home(tmp_path, broker, [org]) as (sim, platform):
            anna = Carer("Anna", "anna", org, "verzorgende")
            sim.issue(anna, windows=inside)
            fill(data)
            unrecorded: list[str] = []
            for _ in range(200):
                result = await sim.attempt(anna, timeout=15)
                assert (result.granted, result.reason) == (True, "ok"), result
                if result.event.startswith("unjournaled-"):
                    unrecorded.append(result.event)
                    if len(unrecorded) >= 3:
                        break
            assert len(unrecorded) >= 3, "the journal never reported the full disk"
            assert await lock_state(sim) == "unlocked"
            traces = {
                line["local_id"]: line for line in log_lines(sim.dir, "door.unjournaled")
            }
            for local in unrecorded:
                body = traces[local]["body"]
                assert (body["type"], body["door"], body["sub"], body["iss"]) == (
                    "access.granted", "front", "anna", org.id,
                ), body  # fmt: skip

            # a signed remote command on the same full disk: carried out, and traced
            raw = sim.command("lock")
            rid = Command.decode(raw).request_id
            await platform.send_command(raw)
            await until(lambda: lock_state_is(sim, "locked"))

            def traced() -> list[dict[str, Any]]:
                return [
                    line["body"]
                    for line in log_lines(sim.dir, "door.unjournaled")
                    if line["body"].get("request_id") == rid
                ]

            await until(lambda: done(len(traced()) == 2))
            bodies = traced()
            assert [b["type"] for b in bodies] == ["access.granted", "command.result"], bodies
            assert bodies[0]["channel"] == "command" and bodies[0]["actor"] == sim.signer_id
            assert bodies[1]["ok"] is True, bodies
